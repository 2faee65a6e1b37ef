//! The example's events as a webhook receiver sees them (README, "Events"): a server killed
//! with SIGKILL while deliveries are pending loses none of them; started again on the same
//! file, it delivers each with the `webhook-id` it had.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{Server, WorkDir};

/// One request the receiver got: its `webhook-id`, the event, and whether it was taken.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    event: serde_json::Value,
    taken: bool,
}

/// A webhook receiver on a free port: answers 503 until `up`, then 204.
struct Receiver {
    url: String,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let (up, got) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let receiver = Self {
            url,
            up: up.clone(),
            got: Arc::clone(&got),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (up, got) = (up.clone(), got.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut headers = HashMap::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        if let Some((name, value)) = line.trim_end().split_once(':') {
                            headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
                        }
                        line.clear();
                    }
                    let length = headers
                        .get("content-length")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let taken = up.load(Ordering::SeqCst);
                    got.lock().unwrap().push(Delivery {
                        id: headers.get("webhook-id").cloned().unwrap_or_default(),
                        event: serde_json::from_slice(&body).unwrap_or_default(),
                        taken,
                    });
                    let status = if taken {
                        "204 No Content"
                    } else {
                        "503 Unavailable"
                    };
                    let _ = (&stream).write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        receiver
    }

    fn got(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits up to `limit` for `done` to hold of what was received.
    fn wait_for(&self, limit: Duration, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let started = Instant::now();
        loop {
            let got = self.got();
            if done(&got) || started.elapsed() > limit {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn a_server_killed_with_deliveries_pending_delivers_them_after_a_restart() {
    let receiver = Receiver::start();
    let env = [
        ("NOUVEL_WEBHOOK_URL", receiver.url.as_str()),
        ("NOUVEL_WEBHOOK_SECRET", SECRET),
    ];
    let dir = WorkDir::new();
    let first = Server::start_in(dir.clone(), &env);
    let keys = format!("/accounts/{}/keys", first.demo_account());
    let mut made = Vec::new();
    for n in 0..3 {
        let body = format!(r#"{{"name": "Hooked {n}", "permissions": ["generate"]}}"#);
        let (status, key) = first.admin("POST", &keys, &body).unwrap();
        assert_eq!(status, 201);
        made.push(key["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = first
        .admin("POST", &format!("{keys}/{}/disable", made[0]), "")
        .unwrap();
    assert_eq!(status, 200);
    // The receiver refuses: each key's first event has been tried and is waiting to be
    // tried again when the server is killed.
    let tried = receiver.wait_for(Duration::from_secs(20), |got| {
        made.iter()
            .all(|key| got.iter().any(|d| d.event["key_id"] == key.as_str()))
    });
    assert!(tried.iter().all(|d| !d.taken));
    first.signal("KILL");
    let _ = first.wait();

    receiver.up.store(true, Ordering::SeqCst);
    let second = Server::start_in(dir, &env);
    let delivered = |got: &[Delivery], key: &str| -> Vec<String> {
        got.iter()
            .filter(|d| d.taken && d.event["key_id"] == key)
            .map(|d| d.event["type"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // A retry is due 10 s after a refusal; an attempt cut by the kill, once its lease of a
    // minute ends.
    let got = receiver.wait_for(Duration::from_secs(90), |got| {
        made.iter().all(|key| !delivered(got, key).is_empty())
            && delivered(got, &made[0]).len() == 2
    });
    assert_eq!(delivered(&got, &made[0]), ["key.created", "key.disabled"]);
    for key in &made[1..] {
        assert_eq!(delivered(&got, key), ["key.created"]);
    }
    let ours = |d: &&Delivery| made.iter().any(|key| d.event["key_id"] == key.as_str());
    for attempt in got.iter().filter(ours).filter(|d| !d.taken) {
        let taken = got
            .iter()
            .find(|d| d.taken && d.event["id"] == attempt.event["id"]);
        assert_eq!(
            taken.map(|d| &d.id),
            Some(&attempt.id),
            "delivered after the restart with the webhook-id it was tried with"
        );
        assert_eq!(attempt.id, attempt.event["id"].as_str().unwrap());
    }
    drop(second);
}
