//! Ports for servers the tests start (shared with the example's tests).

use std::hash::{BuildHasher, RandomState};

/// A port nothing listens on, below the range the system gives connections their own
/// ports from: a port from that range (`bind` to port 0, then released) can be taken by
/// another test's connection before the server binds it.
pub fn free_port() -> u16 {
    loop {
        let random = RandomState::new().hash_one(std::time::Instant::now());
        let port = 20_000 + (random % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
