//! The example server as its users start it: the binary `cargo run --example nouvel_api`
//! builds, run as a process, spoken to over HTTP.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ADMIN_TOKEN: &str = "a-test-admin-token-of-length";

/// The Nouvel example's binary, which `cargo test` builds beside this test.
pub fn binary() -> std::path::PathBuf {
    NOUVEL.binary()
}

/// Which example server: its binary, what its variables start with, its key prefix and
/// where it mounts its admin API.
#[derive(Clone, Copy)]
pub struct Example {
    name: &'static str,
    env: &'static str,
    key_prefix: &'static str,
    pub admin_at: &'static str,
}

pub const NOUVEL: Example = Example {
    name: "nouvel_api",
    env: "NOUVEL",
    key_prefix: "nvl_",
    admin_at: "/admin",
};

pub const WEATHER: Example = Example {
    name: "weather_api",
    env: "WEATHER",
    key_prefix: "wx_",
    admin_at: "/ops",
};

impl Example {
    pub fn binary(self) -> std::path::PathBuf {
        let deps = std::env::current_exe().unwrap();
        let profile = deps.parent().unwrap().parent().unwrap();
        profile.join("examples").join(self.name)
    }
}

/// The library tests' own Redis servers and Redis Cluster, and free ports.
#[allow(dead_code)]
#[path = "../../../../tests/common/servers.rs"]
pub mod servers;

/// A directory of the test's own, removed when the last holder drops it: the server's
/// working directory, where its default store, `nouvel.db`, lives.
pub struct WorkDir(pub std::path::PathBuf);

impl WorkDir {
    pub fn new() -> std::sync::Arc<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nouvel-example-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::sync::Arc::new(Self(dir))
    }

    pub fn database(&self) -> std::path::PathBuf {
        self.0.join("nouvel.db")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running example server; killed when dropped, so that no test leaves one behind.
pub struct Server {
    pub example: Example,
    pub dir: std::sync::Arc<WorkDir>,
    pub child: Child,
    pub address: String,
    pub demo_key: String,
    /// The printed one-time sign-in link.
    pub sign_in: String,
    pub output: Vec<String>,
}

impl Server {
    /// Starts the server with `env`, in a directory of its own, and waits until it prints
    /// its demo key and sign-in link.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_in(WorkDir::new(), env)
    }

    /// Starts the server in `dir` (again, after a stop, to see what it kept).
    pub fn start_in(dir: std::sync::Arc<WorkDir>, env: &[(&str, &str)]) -> Self {
        Self::launch(NOUVEL, dir, env, Command::new(binary()))
    }

    /// Starts `example` with `env`, in a directory of its own.
    pub fn start_example(example: Example, env: &[(&str, &str)]) -> Self {
        Self::launch(example, WorkDir::new(), env, Command::new(example.binary()))
    }

    /// Starts the server with at most `files` open descriptors (`ulimit -n`).
    pub fn start_with_descriptors(files: u32, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\""))
            .arg(binary());
        Self::launch(NOUVEL, WorkDir::new(), env, command)
    }

    fn launch(
        example: Example,
        dir: std::sync::Arc<WorkDir>,
        env: &[(&str, &str)],
        mut command: Command,
    ) -> Self {
        // Port 0: the server binds a port of its own choosing, and says which.
        let mut child = command
            .current_dir(&dir.0)
            .env(format!("{}_ADDR", example.env), "127.0.0.1:0")
            .env(format!("{}_ADMIN_TOKEN", example.env), ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example is built by `cargo test`");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut output = Vec::new();
        let (mut address, mut demo_key, mut sign_in) = (None, None, None);
        while let Some(Ok(line)) = lines.next() {
            let line = line.trim().to_owned();
            if let Some((_, bound)) = line.split_once("listening on http://") {
                address = Some(bound.to_owned());
            }
            if line.starts_with(example.key_prefix) {
                demo_key = Some(line.clone());
            }
            if line.contains("/demo/sign-in?code=") {
                sign_in = Some(line.clone());
            }
            output.push(line);
            if demo_key.is_some() && sign_in.is_some() {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            example,
            dir,
            child,
            address: address.unwrap_or_else(|| panic!("no address in {output:?}")),
            demo_key: demo_key.unwrap_or_else(|| panic!("no demo key in {output:?}")),
            sign_in: sign_in.unwrap_or_else(|| panic!("no sign-in link in {output:?}")),
            output,
        }
    }

    /// Sends one request and reads the status line.
    pub fn status(&self, path: &str) -> String {
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

    /// Sends `method path` with `headers` and `body`; the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        self.try_request(method, path, headers, body)
            .expect("the server answers")
    }

    /// [`request`](Self::request), or `None` if the connection failed (a killed server).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Option<(u16, String)> {
        let answer = self.raw(method, path, headers, body)?;
        let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok())?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    /// The whole answer to `method path`, head and body, as it came; `None` if the
    /// connection failed.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Option<String> {
        let mut stream = TcpStream::connect(&self.address).ok()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        write!(stream, "{head}\r\n{body}").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// The demo account's id, as the server printed it.
    pub fn demo_account(&self) -> String {
        self.output
            .iter()
            .find_map(|l| l.split("the demo account is ").nth(1))
            .unwrap()
            .trim_end_matches(':')
            .to_owned()
    }

    /// `method /admin{path}` with the admin token and a JSON `body`: the status and the body.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let (status, body) = self.try_request(
            method,
            &format!("{}{path}", self.example.admin_at),
            &[("Authorization", &bearer)],
            body,
        )?;
        Some((
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// `method path` presenting `key`: the status and the body.
    pub fn with_key(&self, method: &str, path: &str, key: &str) -> (u16, String) {
        let bearer = format!("Bearer {key}");
        self.request(method, path, &[("Authorization", &bearer)], "")
    }

    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits up to 10 s for the process to end; its exit code.
    pub fn wait(mut self) -> Option<i32> {
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

/// A key pair standing for GitHub's secret scanning key, and its public key document in
/// the server's directory (for `NOUVEL_SECRET_SCANNING_KEYS`).
pub struct Scanner {
    signing: p256::ecdsa::SigningKey,
    pub document: std::path::PathBuf,
}

impl Scanner {
    pub fn new(dir: &WorkDir) -> Self {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        use sha2::Digest;
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        let signing = p256::ecdsa::SigningKey::from_slice(&sha2::Sha256::digest(seed)).unwrap();
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let document = serde_json::json!({
            "public_keys": [{"key_identifier": "test-key", "key": pem, "is_current": true}]
        });
        let path = dir.0.join("github-keys.json");
        std::fs::write(&path, document.to_string()).unwrap();
        Self {
            signing,
            document: path,
        }
    }

    /// Reports `token` found at `url` to `server`, signed: the status and the body.
    pub fn report(&self, server: &Server, token: &str, url: &str, source: &str) -> (u16, String) {
        use base64::Engine;
        use p256::ecdsa::signature::Signer;
        let body = serde_json::json!([
            {"token": token, "type": "nouvel_api_key", "url": url, "source": source}
        ])
        .to_string();
        let signature: p256::ecdsa::Signature = self.signing.sign(body.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
        let headers = [
            ("Content-Type", "application/json"),
            ("Github-Public-Key-Identifier", "test-key"),
            ("Github-Public-Key-Signature", signature.as_str()),
        ];
        server.request("POST", "/security/secret-scanning", &headers, &body)
    }
}
