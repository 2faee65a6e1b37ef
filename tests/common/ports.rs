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

/// A port for a Redis Cluster node: it and its cluster bus port (10 000 above) both free
/// and below the system's range for connections.
pub fn free_cluster_port() -> u16 {
    loop {
        let random = RandomState::new().hash_one(std::time::Instant::now());
        let port = 20_000 + (random % 2_000) as u16;
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}
