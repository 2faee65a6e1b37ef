//! Real Redis and PostgreSQL for the tests: the shared servers from `REDIS_URL` and
//! `DATABASE_URL` (`.ci/run` starts them), and private Redis servers a test can stop.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

// By path: the benches and the example's tests include these files by path too.
#[path = "ports.rs"]
pub mod ports;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A name no other test run uses: for Redis key prefixes and PostgreSQL schemas.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        nouvel_auth::key::ApiKey::generate().expose_secret()[4..16].to_lowercase()
    )
}

/// A `redis-server` of the test's own, on a free port; stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Arguments beyond the port and the defaults.
    more: Vec<String>,
}

impl RedisServer {
    /// Starts on a free port, trying another if one is taken before the server binds it.
    pub async fn start() -> Self {
        Self::start_with(ports::free_port, Vec::new()).await
    }

    /// Starts on a port from `port`, with `more` arguments.
    async fn start_with(port: fn() -> u16, more: Vec<String>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let mut server = Self {
                port: port(),
                child: None,
                more: more.clone(),
            };
            match server.try_resume().await {
                Ok(()) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("redis-server did not start: {failures:#?}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts again on the same port, and waits until it answers.
    pub async fn resume(&mut self) {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match self.try_resume().await {
                Ok(()) => return,
                Err(why) => failures.push(why),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "redis-server did not start again on port {}: {failures:#?}",
            self.port
        );
    }

    /// One start: `Err` with the server's own words if it exits (a port taken, say), or
    /// if it does not answer within 15 s (a loaded machine is slow, not broken).
    async fn try_resume(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(&self.more)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services installs it)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                let mut said = String::new();
                if let Some(mut out) = child.stdout.take() {
                    let _ = out.read_to_string(&mut said);
                }
                return Err(format!("port {}: {status}: {said}", self.port));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("port {}: no answer within 15 s", self.port))
    }

    /// Kills the server, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Calls of `command` the server has served.
    pub async fn calls(&self, command: &str) -> u64 {
        command_stats(&self.url())
            .await
            .into_iter()
            .find(|(name, _)| name == command)
            .map_or(0, |(_, n)| n)
    }

    /// Commands clients sent to this server (see [`client_commands`]).
    pub async fn data_commands(&self) -> u64 {
        client_commands(&self.url()).await
    }
}

/// Calls per command the Redis at `url` has served (`INFO commandstats`).
pub async fn command_stats(url: &str) -> Vec<(String, u64)> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

/// Calls of every command a client sent to the Redis at `url`, but those a connection and
/// `INFO` send for themselves. (`INFO` also counts the calls a script makes; those are
/// left out.)
pub async fn client_commands(url: &str) -> u64 {
    let bookkeeping = ["info", "hello", "client|setinfo", "select", "ping"];
    let inside_the_script = [
        "time",
        "zremrangebyscore",
        "zcard",
        "zadd",
        "pexpire",
        "zrange",
    ];
    command_stats(url)
        .await
        .into_iter()
        .filter(|(name, _)| {
            !bookkeeping.contains(&name.as_str()) && !inside_the_script.contains(&name.as_str())
        })
        .map(|(_, n)| n)
        .sum()
}

/// A Redis Cluster of the test's own: three primaries with one replica each, on free
/// ports, a node failing over after a second without its primary; stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("nouvel-cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for i in 0..6 {
            let more = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{i}.conf"),
                "--cluster-node-timeout",
                "1000",
                "--dir",
                dir.to_str().unwrap(),
            ];
            let more = more.iter().map(|s| (*s).to_owned()).collect();
            nodes.push(RedisServer::start_with(ports::free_cluster_port, more).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli is installed (scripts/services installs it)");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = Self { nodes, dir };
        cluster.wait_until_ready().await;
        cluster
    }

    /// The nodes, as `REDIS_URL` lists them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every live node sees the cluster whole and every replica in sync.
    pub async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = true;
            for node in (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some()) {
                let info: String = self
                    .try_query(node, &["CLUSTER", "INFO"])
                    .await
                    .unwrap_or_default();
                let replication: String = self
                    .try_query(node, &["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                ready &= info.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"));
            }
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not come up within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node that is now the primary of `key`'s slot.
    pub async fn primary_of(&self, key: &str) -> usize {
        self.try_primary_of(key)
            .await
            .expect("a live primary serves the slot")
    }

    /// What `command` answers on node `node`.
    pub async fn query<T: redis::FromRedisValue>(&self, node: usize, command: &[&str]) -> T {
        self.try_query(node, command)
            .await
            .unwrap_or_else(|| panic!("node {node} answers {command:?}"))
    }

    /// What `command` answers on node `node`, if it answers.
    async fn try_query<T: redis::FromRedisValue>(
        &self,
        node: usize,
        command: &[&str],
    ) -> Option<T> {
        let client = redis::Client::open(self.nodes[node].url()).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let mut cmd = redis::cmd(command[0]);
        for arg in &command[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut connection).await.ok()
    }

    /// The live node that is now the primary of `key`'s slot, if any.
    pub async fn try_primary_of(&self, key: &str) -> Option<usize> {
        let live = self.nodes.iter().position(|n| n.child.is_some())?;
        let slot: i64 = self.query(live, &["CLUSTER", "KEYSLOT", key]).await;
        for i in (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some()) {
            let Some(nodes) = self.try_query::<String>(i, &["CLUSTER", "NODES"]).await else {
                continue;
            };
            let own = nodes
                .lines()
                .find(|line| line.contains("myself"))
                .unwrap_or_default();
            let fields: Vec<&str> = own.split_whitespace().collect();
            let primary = fields.get(2).is_some_and(|flags| flags.contains("master"));
            let serves = fields
                .iter()
                .skip(8)
                .any(|range| match range.split_once('-') {
                    Some((from, to)) => (from.parse().unwrap_or(i64::MAX)
                        ..=to.parse().unwrap_or(-1))
                        .contains(&slot),
                    None => range.parse() == Ok(slot),
                });
            if primary && serves {
                return Some(i);
            }
        }
        None
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL store in a schema of its own, migrated.
pub async fn postgres_store() -> nouvel_auth::store::PostgresKeyStore {
    postgres_store_at(&database_url(), &unique("nouvel_test")).await
}

pub async fn postgres_store_at(url: &str, schema: &str) -> nouvel_auth::store::PostgresKeyStore {
    let store =
        nouvel_auth::store::PostgresKeyStore::connect(url, schema, &nouvel_auth::Profile::nouvel())
            .await
            .unwrap();
    store.migrate().await.unwrap();
    store
}

/// A TCP proxy in front of PostgreSQL that a test can cut, as an outage would, and resume.
pub struct Proxy {
    pub port: u16,
    target: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            target,
            tasks: Default::default(),
        };
        proxy.serve(listener);
        proxy
    }

    /// The PostgreSQL URL that goes through the proxy.
    pub fn postgres_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Relays every connection accepted on `listener` to the target.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let (target, accepted) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accepted.lock().unwrap().push(relay);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes every connection and the listening socket.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again, on the same port, after a [`cut`](Self::cut).
    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
