//! The example server as its users run it: the binary `cargo run --example nouvel_api`
//! builds, started as a process, stopped by a signal.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The example's binary, which `cargo test` builds beside this test.
fn binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    profile.join("examples").join("nouvel_api")
}

fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

struct Server {
    child: Child,
    address: String,
    demo_key: String,
    output: Vec<String>,
}

impl Server {
    /// Starts the server with `env` and waits until it prints its demo key.
    fn start(env: &[(&str, &str)]) -> Self {
        let address = free_address();
        let mut child = Command::new(binary())
            .env("NOUVEL_ADDR", &address)
            .env("NOUVEL_ADMIN_TOKEN", "a-test-admin-token-of-length")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example is built by `cargo test`");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut output = Vec::new();
        let mut demo_key = None;
        while let Some(Ok(line)) = lines.next() {
            let key = line
                .trim()
                .strip_prefix("nvl_")
                .map(|rest| format!("nvl_{rest}"));
            output.push(line);
            if let Some(key) = key {
                demo_key = Some(key);
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            address,
            demo_key: demo_key.unwrap_or_else(|| panic!("no demo key in {output:?}")),
            output,
        }
    }

    /// Sends one request and reads the status line.
    fn status(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.demo_key
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits up to 10 s for the process to end; its exit code.
    fn wait(mut self) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the server did not stop: {:?}", self.output);
    }
}

#[test]
fn a_short_or_spaced_admin_token_is_refused_at_start() {
    for token in ["short", "", "sixteen chars ok", "a-long-token-with\ta-tab"] {
        let output = Command::new(binary())
            .env("NOUVEL_ADDR", free_address())
            .env("NOUVEL_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{token:?} was accepted");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("at least 16 characters"), "{token:?}: {said}");
    }
}

#[test]
fn sigterm_and_sigint_stop_it_gracefully_flushing_usage() {
    for signal in ["TERM", "INT"] {
        let server = Server::start(&[]);
        assert!(
            server.status("/api/v1/projects").contains("200"),
            "{signal}"
        );
        server.signal(signal);
        assert_eq!(server.wait(), Some(0), "{signal}");
    }
}

#[test]
fn usage_of_the_last_interval_reaches_postgresql_on_sigterm() {
    // `scripts/test` has started it (and drops the schema on its next run).
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("nouvel_test_example_{}", std::process::id());
    let server = Server::start(&[("DATABASE_URL", &url), ("NOUVEL_SCHEMA", &schema)]);
    for _ in 0..3 {
        assert!(server.status("/api/v1/projects").contains("200"));
    }
    // Well within the 5 s flush interval: only the flush at shutdown writes these.
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
    let admitted = Command::new("psql")
        .args([
            &url,
            "-qAt",
            "-c",
            &format!("SELECT admitted FROM {schema}.api_keys WHERE name = 'Demo key'"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&admitted.stdout).trim(), "3");
}

#[test]
fn a_connection_that_never_finishes_its_head_is_closed_after_30_seconds() {
    let server = Server::start(&[]);
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    stream
        .write_all(b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(40)).contains(&waited),
        "closed after {waited:?}"
    );
    // Meanwhile the server served others.
    assert!(server.status("/api/v1/projects").contains("200"));
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}
