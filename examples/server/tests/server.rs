//! The example server as its users run it: the binary `cargo run --example nouvel_api`
//! builds, started as a process, stopped by a signal.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use common::{binary, Server};

/// What the server says on stderr when `env` makes it refuse to start; a panic if it
/// starts. In a directory of its own, and stopped if it starts after all: a server that
/// took the setting would otherwise run on.
fn refused_at_start(env: &[(&str, &str)]) -> String {
    let dir = common::WorkDir::new();
    let mut child = Command::new(binary())
        .current_dir(&dir.0)
        .env("NOUVEL_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{env:?} was accepted: the server started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{env:?} was accepted");
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    said
}

#[test]
fn a_short_or_spaced_admin_token_is_refused_at_start() {
    for token in ["short", "", "sixteen chars ok", "a-long-token-with\ta-tab"] {
        let said = refused_at_start(&[("NOUVEL_ADMIN_TOKEN", token)]);
        assert!(said.contains("at least 16 characters"), "{token:?}: {said}");
    }
}

#[test]
fn the_hints_thresholds_come_from_the_environment() {
    for value in ["soon", "-1", "12m", "1.5d"] {
        let said = refused_at_start(&[("NOUVEL_ROTATE_AFTER", value)]);
        assert!(
            said.contains("NOUVEL_ROTATE_AFTER must be whole seconds"),
            "{value:?}: {said}"
        );
    }
    let server = Server::start(&[
        ("NOUVEL_ROTATE_AFTER", "1s"),
        ("NOUVEL_UNUSED_AFTER", "30d"),
    ]);
    let keys = format!("/accounts/{}/keys", server.demo_account());
    let started = Instant::now();
    let hints = loop {
        let (status, listed) = server.admin("GET", &keys, "").unwrap();
        assert_eq!(status, 200);
        let hints = listed["keys"][0]["hints"].clone();
        if hints.as_array().is_some_and(|h| !h.is_empty())
            || started.elapsed() > Duration::from_secs(5)
        {
            break hints;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        hints,
        serde_json::json!([{"code": "rotation_due", "message": "Created more than 1 second ago: rotate it."}])
    );
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
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

/// How long after `started` the server closed `stream` (reading until it does, 45 s at most).
fn closed_after(mut stream: TcpStream, started: Instant) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    started.elapsed()
}

/// What opens an HTTP/2 connection with prior knowledge, and then says nothing more.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[test]
fn connections_that_never_send_a_whole_request_head_are_closed_after_30_seconds() {
    let server = Server::start(&[]);
    let started = Instant::now();
    let silent = TcpStream::connect(&server.address).unwrap();
    let mut half_head = TcpStream::connect(&server.address).unwrap();
    half_head
        .write_all(b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut preface_only = TcpStream::connect(&server.address).unwrap();
    preface_only.write_all(HTTP2_PREFACE).unwrap();
    let waits: Vec<_> = [silent, half_head, preface_only]
        .map(|stream| std::thread::spawn(move || closed_after(stream, started)))
        .into_iter()
        .collect();
    // Meanwhile the server serves others.
    assert!(server.status("/api/v1/projects").contains("200"));
    for (what, wait) in ["silent", "half a head", "the HTTP/2 preface"]
        .iter()
        .zip(waits)
    {
        let waited = wait.join().unwrap();
        assert!(
            (Duration::from_secs(29)..Duration::from_secs(40)).contains(&waited),
            "{what}: closed after {waited:?}"
        );
    }
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn running_out_of_descriptors_never_ends_the_server() {
    let server = Server::start_with_descriptors(64, &[]);
    // Far more idle connections than descriptors: `accept` fails, again and again.
    let held: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&server.address).ok())
        .collect();
    assert!(held.len() > 64, "only {} connections made", held.len());
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    // Descriptors back: it answers again, with no restart.
    let started = Instant::now();
    loop {
        let answer = server.status("/api/v1/projects");
        if answer.contains("200") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn shutdown_waits_for_silent_clients_no_longer_than_its_deadline_and_keeps_usage() {
    let server = Server::start(&[("NOUVEL_SHUTDOWN_SECONDS", "2")]);
    let account = server.demo_account();
    let (status, made) = server
        .admin(
            "POST",
            &format!("/accounts/{account}/keys"),
            r#"{"name": "Counted", "permissions": ["projects:read"]}"#,
        )
        .unwrap();
    assert_eq!(status, 201);
    let key = made["key"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(server.with_key("GET", "/api/v1/projects", key).0, 200);
    }
    // Two clients that hold their connections silent: the HTTP/2 preface alone, and a
    // router request whose body never comes.
    let mut preface_only = TcpStream::connect(&server.address).unwrap();
    preface_only.write_all(HTTP2_PREFACE).unwrap();
    let mut no_body = TcpStream::connect(&server.address).unwrap();
    write!(
        no_body,
        "POST /admin/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 100\r\n\r\n{{",
        common::ADMIN_TOKEN
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.signal("TERM");
    let dir = server.dir.clone();
    assert_eq!(server.wait(), Some(0));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    // The usage of the last interval was flushed before the exit.
    let restarted = Server::start_in(dir, &[]);
    let (_, keys) = restarted
        .admin("GET", &format!("/accounts/{account}/keys"), "")
        .unwrap();
    let counted = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "Counted")
        .unwrap()
        .clone();
    assert_eq!(counted["usage"]["admitted"], 3, "{counted}");
    restarted.signal("TERM");
    assert_eq!(restarted.wait(), Some(0));
}

#[test]
fn every_route_that_takes_the_admin_token_shares_one_guard() {
    let server = Server::start(&[]);
    let wrong = [("Authorization", "Bearer a-wrong-guess-of-the-token")];
    // Twenty wrong guesses spread over the three routes that take the token.
    for i in 0..20 {
        let (path, method) = [
            ("/metrics", "GET"),
            ("/demo/sign-in", "POST"),
            ("/admin/accounts", "POST"),
        ][i % 3];
        assert_eq!(
            server.request(method, path, &wrong, "{}").0,
            401,
            "{method} {path}"
        );
    }
    let right = format!("Bearer {}", common::ADMIN_TOKEN);
    for (method, path) in [
        ("GET", "/metrics"),
        ("POST", "/demo/sign-in"),
        ("GET", "/admin/openapi.json"),
    ] {
        let (status, body) = server.request(method, path, &[("Authorization", &right)], "{}");
        assert_eq!(status, 429, "{method} {path}: {body}");
        assert!(body.contains("too_many_failures"), "{body}");
    }
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn the_demo_sign_in_link_works_once_and_scripts_sign_in_with_the_admin_token() {
    let server = Server::start(&[]);
    let path = server
        .sign_in
        .split_once(&server.address)
        .unwrap()
        .1
        .to_owned();
    let mut stream = TcpStream::connect(&server.address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("location: /settings/api-keys\r\n"),
        "{answer}"
    );
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .to_owned();
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap();
    let (status, page) = server.request("GET", "/settings/api-keys", &[("Cookie", session)], "");
    assert_eq!(status, 200);
    assert!(page.contains("API Keys"));
    let (status, keys) =
        server.request("GET", "/settings/api-keys/keys", &[("Cookie", session)], "");
    assert_eq!(status, 200);
    assert!(keys.contains("Demo key"));
    // The link works once.
    assert_eq!(server.request("GET", &path, &[], "").0, 401);
    assert_eq!(
        server.request("GET", "/settings/api-keys/keys", &[], "").0,
        401
    );

    // Scripts: the admin token and an account id.
    let account = server
        .output
        .iter()
        .find_map(|l| l.split("the demo account is ").nth(1))
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let body = format!(r#"{{"account_id": "{account}"}}"#);
    let bearer = format!("Bearer {}", common::ADMIN_TOKEN);
    let (status, _) = server.request(
        "POST",
        "/demo/sign-in",
        &[("Authorization", &bearer)],
        &body,
    );
    assert_eq!(status, 204);
    assert_eq!(
        server
            .request(
                "POST",
                "/demo/sign-in",
                &[("Authorization", "Bearer wrong-token-1234567")],
                &body
            )
            .0,
        401
    );
    assert_eq!(
        server
            .request(
                "POST",
                "/demo/sign-in",
                &[("Authorization", &bearer)],
                r#"{"account_id": "acc_none"}"#
            )
            .0,
        404
    );
    assert_eq!(server.request("GET", "/healthz", &[], "").0, 200);
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn metrics_are_served_to_the_admin_token_in_prometheus_format() {
    let server = Server::start(&[]);
    assert!(server.status("/api/v1/projects").contains("200"));
    let (status, _) = server.with_key("GET", "/api/v1/analytics", "nvl_made_up");
    assert_eq!(status, 401);
    assert_eq!(server.request("GET", "/metrics", &[], "").0, 401);
    let bearer = format!("Bearer {}", common::ADMIN_TOKEN);
    let (status, text) = server.request("GET", "/metrics", &[("Authorization", &bearer)], "");
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"nouvel_auth_requests_total{outcome="admitted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"nouvel_auth_requests_total{outcome="invalid_api_key"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("nouvel_auth_check_duration_seconds"),
        "{text}"
    );
    assert!(!text.contains(&server.demo_key), "no key in the metrics");
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn unknown_paths_under_the_api_stay_behind_the_layer() {
    let server = Server::start(&[]);
    let code = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for path in ["/api/v1/not-a-route", "/api/v2/projects", "/api/", "/api"] {
        let (status, body) = server.request("GET", path, &[], "");
        assert_eq!(
            (status, code(&body)),
            (401, "missing_api_key".to_owned()),
            "{path}"
        );
        let (status, body) = server.with_key("GET", path, &server.demo_key);
        assert_eq!(
            (status, code(&body)),
            (403, "route_not_allowed".to_owned()),
            "{path}"
        );
    }
    // A known one reaches its stub, which sees the path as the client sent it.
    let (status, body) = server.with_key("GET", "/api/v1/projects", &server.demo_key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["route"],
        "GET /api/v1/projects"
    );
    // Outside `/api/`, an unknown path is the plain 404 it always was.
    let (status, body) = server.request("GET", "/not-a-route", &[], "");
    assert_eq!((status, code(&body)), (404, "not_found".to_owned()));
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn the_limit_is_counted_on_the_redis_cluster_redis_url_lists() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(common::servers::RedisCluster::start());
    let server = Server::start(&[("REDIS_URL", &cluster.urls())]);
    let statuses: Vec<u16> = (0..61)
        .map(|_| {
            server
                .with_key("GET", "/api/v1/projects", &server.demo_key)
                .0
        })
        .collect();
    assert!(statuses[..60].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(statuses[60], 429);
    // The count is the cluster's: the key's window is there, under its account's hash tag.
    let held = runtime.block_on(async {
        let mut held = Vec::new();
        for node in 0..cluster.nodes.len() {
            let keys: Vec<String> = cluster.query(node, &["KEYS", "nvl:rl:*"]).await;
            held.extend(keys);
        }
        held
    });
    assert!(
        held.iter()
            .any(|key| key.starts_with("nvl:rl:{acc_") && key.ends_with(":w60000")),
        "{held:?}"
    );
}

#[test]
fn a_key_works_only_from_its_networks_and_behind_trusted_proxies_from_the_forwarded_client() {
    let server = Server::start(&[("NOUVEL_TRUSTED_PROXIES", "127.0.0.1, ::1")]);
    let keys = format!("/accounts/{}/keys", server.demo_account());
    let made = |networks: &str| {
        let body = format!(
            r#"{{"name": "Networks", "permissions": ["projects:read"], "allowed_networks": {networks}}}"#
        );
        let (status, key) = server.admin("POST", &keys, &body).unwrap();
        assert_eq!(status, 201, "{key}");
        key["key"].as_str().unwrap().to_owned()
    };
    let office = made(r#"["203.0.113.0/24"]"#);
    let bearer = format!("Bearer {office}");
    let from = |forwarded: Option<&str>| {
        let mut headers = vec![("Authorization", bearer.as_str())];
        if let Some(forwarded) = forwarded {
            headers.push(("X-Forwarded-For", forwarded));
        }
        server.request("GET", "/api/v1/projects", &headers, "")
    };
    let (status, body) = from(None);
    assert_eq!(status, 403);
    assert!(body.contains("network_not_allowed"), "{body}");
    assert_eq!(
        from(Some("203.0.113.9")).0,
        200,
        "the proxy's forwarded client"
    );
    assert_eq!(from(Some("198.51.100.1")).0, 403);
    let local = made(r#"["127.0.0.0/8", "::1"]"#);
    assert_eq!(server.with_key("GET", "/api/v1/projects", &local).0, 200);
}
