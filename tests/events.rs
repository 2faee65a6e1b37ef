//! Lifecycle events (README, "Events"): delivered in order per key, retried with backoff
//! and abandoned after 24 hours, told once by the sweep, signed as Standard Webhooks, and
//! shared by dispatchers of several instances on PostgreSQL.

mod common;

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, http::HeaderMap, http::StatusCode, routing::post, Router};
use nouvel_auth::{
    clock::{Clock, ManualClock},
    events::{
        Event, EventDispatcher, EventKind, EventSink, SinkError, WebhookSecret, WebhookSender,
    },
    nouvel,
    time::{macros::datetime, OffsetDateTime},
    Expiration, KeyManager, KeySpec, MemoryKeyStore, Profile, RateLimit,
};

const T0: OffsetDateTime = datetime!(2031-03-10 12:00 UTC);

/// A sink that keeps what it took; it refuses the first `failures` deliveries, and every
/// event of the kind `refused`.
#[derive(Clone, Default)]
struct Sink {
    took: Arc<Mutex<Vec<Event>>>,
    tried: Arc<Mutex<usize>>,
    failures: usize,
    refused: Option<EventKind>,
}

impl Sink {
    fn failing(failures: usize) -> Self {
        Self {
            failures,
            ..Self::default()
        }
    }

    fn took(&self) -> Vec<(EventKind, String)> {
        self.took
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.key_id.as_ref().map_or("", |k| k.as_str()).to_owned(),
                )
            })
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.took
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }
}

impl EventSink for Sink {
    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let tried = {
            let mut tried = self.tried.lock().unwrap();
            *tried += 1;
            *tried
        };
        if tried <= self.failures || self.refused == Some(event.kind) {
            return Err(SinkError::new("refused"));
        }
        self.took.lock().unwrap().push(event.clone());
        Ok(())
    }
}

fn manager(clock: &ManualClock) -> KeyManager<MemoryKeyStore> {
    Profile::nouvel()
        .clock(clock.clone())
        .key_manager(MemoryKeyStore::new())
}

/// Passes until one delivers nothing; how many events were delivered.
async fn drain<S: nouvel_auth::store::EventOutbox>(dispatcher: &EventDispatcher<S>) -> usize {
    let mut delivered = 0;
    loop {
        match dispatcher.run_once().await.unwrap() {
            0 => return delivered,
            n => delivered += n,
        }
    }
}

#[tokio::test]
async fn a_keys_events_arrive_in_order_and_a_refused_one_is_retried_with_backoff() {
    let clock = ManualClock::new(T0);
    let keys = manager(&clock);
    let sink = Sink::failing(1);
    let dispatcher = EventDispatcher::new(keys.clone()).sink(sink.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let first = keys
        .create_key(&account.id, KeySpec::new("First", [nouvel::GENERATE]))
        .await
        .unwrap();
    keys.disable_key(&account.id, &first.info.id).await.unwrap();
    keys.enable_key(&account.id, &first.info.id).await.unwrap();
    let rotated = keys
        .rotate_key(&account.id, &first.info.id, Duration::from_secs(60))
        .await
        .unwrap();
    keys.delete_key(&account.id, &first.info.id).await.unwrap();

    // The first attempt is refused: nothing of the key goes past it.
    assert_eq!(dispatcher.run_once().await.unwrap(), 0);
    assert!(sink.took().is_empty());
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        dispatcher.run_once().await.unwrap(),
        0,
        "retried before 10 s"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(drain(&dispatcher).await, 5);
    let id = |key: &nouvel_auth::manage::NewKey| key.info.id.as_str().to_owned();
    assert_eq!(
        sink.took(),
        [
            (EventKind::KeyCreated, id(&first)),
            (EventKind::KeyDisabled, id(&first)),
            (EventKind::KeyEnabled, id(&first)),
            (EventKind::KeyRotated, id(&first)),
            (EventKind::KeyDeleted, id(&first)),
        ]
    );
    let took = sink.took.lock().unwrap().clone();
    assert_eq!(
        took[3].data["replacement_id"],
        rotated.info.id.as_str(),
        "key.rotated names the replacement, which has no key.created of its own"
    );
    assert_eq!(took[0].data["name"], "First");
    assert_eq!(took[0].account_id, account.id);
    let json = took.iter().map(Event::to_json).collect::<String>();
    assert!(!json.contains(first.key.expose_secret()));
    assert!(!json.contains(rotated.key.expose_secret()));
}

#[tokio::test]
async fn a_sink_that_took_an_event_is_not_given_it_again_when_another_failed() {
    let clock = ManualClock::new(T0);
    let keys = manager(&clock);
    let (steady, flaky) = (Sink::default(), Sink::failing(2));
    let dispatcher = EventDispatcher::new(keys.clone())
        .sink(steady.clone())
        .sink(flaky.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    keys.create_key(&account.id, KeySpec::new("CI", [nouvel::PUBLISH]))
        .await
        .unwrap();

    assert_eq!(dispatcher.run_once().await.unwrap(), 0);
    clock.advance(Duration::from_secs(10));
    assert_eq!(dispatcher.run_once().await.unwrap(), 0);
    // Twice as long after the second failure.
    clock.advance(Duration::from_secs(19));
    assert_eq!(dispatcher.run_once().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(steady.ids().len(), 1, "the steady sink took it once");
    assert_eq!(flaky.ids(), steady.ids(), "the same event, the same id");
}

#[tokio::test]
async fn an_event_refused_for_24_hours_is_abandoned_and_the_keys_next_goes_on() {
    let clock = ManualClock::new(T0);
    let keys = manager(&clock);
    let sink = Sink {
        refused: Some(EventKind::KeyCreated),
        ..Sink::default()
    };
    let dispatcher = EventDispatcher::new(keys.clone()).sink(sink.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("CI", [nouvel::PUBLISH]))
        .await
        .unwrap();
    keys.disable_key(&account.id, &key.info.id).await.unwrap();

    while clock.now() - T0 < Duration::from_secs(24 * 3600) {
        dispatcher.run_once().await.unwrap();
        assert!(sink.took().is_empty(), "the key's next event waits");
        clock.advance(Duration::from_secs(60));
    }
    // 10 s, 20 s, … doubling to an hour between attempts: about 30 in a day.
    let attempts = *sink.tried.lock().unwrap();
    assert!((25..=40).contains(&attempts), "{attempts} attempts");
    // The next attempt is at most an hour away; the one after it gives up.
    for _ in 0..61 {
        clock.advance(Duration::from_secs(60));
        dispatcher.run_once().await.unwrap();
    }
    assert_eq!(
        sink.took(),
        [(EventKind::KeyDisabled, key.info.id.as_str().to_owned())]
    );
}

#[tokio::test]
async fn the_sweep_tells_an_expiring_key_once_and_its_expiry_once() {
    let clock = ManualClock::new(T0);
    let keys = manager(&clock);
    let sink = Sink::default();
    let dispatcher = EventDispatcher::new(keys.clone()).sink(sink.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let week = keys
        .create_key(
            &account.id,
            KeySpec::new("A week", [nouvel::GENERATE]).expiration(Expiration::Days7),
        )
        .await
        .unwrap();
    let month = keys
        .create_key(
            &account.id,
            KeySpec::new("A month", [nouvel::GENERATE]).expiration(Expiration::Days30),
        )
        .await
        .unwrap();
    let rotated = keys
        .create_key(
            &account.id,
            KeySpec::new("Rotated", [nouvel::GENERATE]).expiration(Expiration::Days7),
        )
        .await
        .unwrap();
    let replacement = keys
        .rotate_key(&account.id, &rotated.info.id, Duration::from_secs(3600))
        .await
        .unwrap();
    drain(&dispatcher).await;
    let told = |kind| {
        sink.took()
            .into_iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, key)| key)
            .collect::<Vec<_>>()
    };
    let id = |key: &nouvel_auth::manage::NewKey| key.info.id.as_str().to_owned();
    let mut expiring = told(EventKind::KeyExpiring);
    expiring.sort();
    let mut expected = [id(&week), id(&replacement)];
    expected.sort();
    assert_eq!(
        expiring, expected,
        "a key made within 7 days of its end is told at once; a rotated one is not (its \
         replacement is)"
    );

    for _ in 0..3 {
        clock.advance(Duration::from_secs(61));
        drain(&dispatcher).await;
    }
    assert_eq!(told(EventKind::KeyExpiring).len(), 2, "once");
    clock.advance(Duration::from_secs(7 * 86_400));
    drain(&dispatcher).await;
    clock.advance(Duration::from_secs(61));
    drain(&dispatcher).await;
    let mut expired = told(EventKind::KeyExpired);
    expired.sort();
    assert_eq!(expired, expected);
    assert_eq!(told(EventKind::KeyExpiring).len(), 2);
    clock.advance(Duration::from_secs(16 * 86_400));
    drain(&dispatcher).await;
    assert_eq!(
        told(EventKind::KeyExpiring)[2..],
        [id(&month)],
        "7 days before its end"
    );
    let took = sink.took.lock().unwrap().clone();
    let expired = took
        .iter()
        .find(|e| e.kind == EventKind::KeyExpired)
        .unwrap();
    assert_eq!(
        expired.data["expires_at"],
        week.info
            .expires_at
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
}

#[tokio::test]
async fn quota_thresholds_are_told_once_per_period_at_80_and_100_percent() {
    let h = common::Harness::new().await;
    let sink = Sink::default();
    let dispatcher = EventDispatcher::new(h.keys.clone()).sink(sink.clone());
    let daily = h
        .key_with(KeySpec::new("Daily", [nouvel::GENERATE]).rate_limits(RateLimit::per_day(10)))
        .await;
    let shared = h
        .key_with(
            KeySpec::new("Shared", [nouvel::GENERATE])
                .rate_limits(RateLimit::per_month(100).per_account()),
        )
        .await;
    let used = async |key: &nouvel_auth::manage::NewKey, requests: usize| {
        for _ in 0..requests {
            let reply = h.send_key("POST", "/api/v1/generate", key).await;
            assert_eq!(reply.status, 200);
        }
        h.keys.profile().flush_usage().await.unwrap();
    };
    let thresholds = || {
        sink.took
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == EventKind::QuotaThreshold)
            .map(|e| {
                (
                    e.key_id.as_ref().map(|k| k.as_str().to_owned()),
                    e.data["period"].as_str().unwrap_or("").to_owned(),
                    e.data["threshold"].as_u64().unwrap_or(0),
                    e.data["used"].as_u64().unwrap_or(0),
                )
            })
            .collect::<Vec<_>>()
    };
    let sweep = async || {
        h.advance(Duration::from_secs(61));
        drain(&dispatcher).await;
    };
    let key = Some(daily.info.id.as_str().to_owned());

    used(&daily, 7).await;
    sweep().await;
    assert!(thresholds().is_empty(), "70 % is not told");
    used(&daily, 1).await;
    sweep().await;
    assert_eq!(thresholds(), [(key.clone(), "day".into(), 80, 8)]);
    sweep().await;
    assert_eq!(thresholds().len(), 1, "once per period");
    used(&daily, 2).await;
    used(&shared, 85).await;
    sweep().await;
    let mut told = thresholds()[1..].to_vec();
    told.sort();
    assert_eq!(
        told,
        [
            (None, "month".into(), 80, 85),
            (key.clone(), "day".into(), 100, 10),
        ],
        "a quota per account is told for the account (no key)"
    );
    // The next day starts the day's quota again.
    h.advance(Duration::from_secs(86_400));
    used(&daily, 9).await;
    sweep().await;
    assert_eq!(thresholds()[3..], [(key, "day".into(), 80, 9)]);
    let event = sink.took.lock().unwrap().last().unwrap().clone();
    assert_eq!(event.data["requests"], 10);
    assert!(event.data["resets_at"].is_string());
}

/// What a webhook receiver got: each request's headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on a free port that answers `statuses` in turn (then 204 for ever).
async fn receiver(statuses: Vec<StatusCode>) -> (String, Received) {
    let received: Received = Arc::default();
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    let app = Router::new().route(
        "/hooks",
        post({
            let received = received.clone();
            move |headers: HeaderMap, body: Bytes| async move {
                received.lock().unwrap().push((headers, body));
                statuses
                    .lock()
                    .unwrap()
                    .next()
                    .unwrap_or(StatusCode::NO_CONTENT)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Checks `body` and `headers` with the Standard Webhooks reference library (Python
/// `standardwebhooks`, installed by `scripts/services`); what it says.
fn verified_by_reference(secret: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let script = "import sys, json\n\
        from standardwebhooks.webhooks import Webhook\n\
        secret, wid, ts, sig, body = sys.argv[1:6]\n\
        try:\n\
        \x20   Webhook(secret).verify(body.encode(), {'webhook-id': wid, 'webhook-timestamp': ts, 'webhook-signature': sig})\n\
        \x20   print('verified')\n\
        except Exception as e:\n\
        \x20   print('refused', e)\n";
    let out = Command::new("python3")
        .args(["-c", script, secret])
        .args([
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        ])
        .arg(std::str::from_utf8(body).unwrap())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn webhooks_are_signed_as_the_reference_library_checks_and_keep_their_id_on_retries() {
    let (url, received) = receiver(vec![StatusCode::INTERNAL_SERVER_ERROR]).await;
    let secret = WebhookSecret::generate();
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let keys = manager(&clock);
    let dispatcher =
        EventDispatcher::new(keys.clone()).sink(WebhookSender::new(&url, secret.clone()).unwrap());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("CI", [nouvel::PUBLISH]))
        .await
        .unwrap();

    assert_eq!(
        dispatcher.run_once().await.unwrap(),
        0,
        "a 500 is a failure"
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    let (headers, body) = &received[1];
    assert_eq!(
        received[0].0["webhook-id"], headers["webhook-id"],
        "the same webhook-id on every retry"
    );
    let event: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(headers["webhook-id"].to_str().unwrap(), event["id"]);
    assert_eq!(event["type"], "key.created");
    assert_eq!(event["key_id"], key.info.id.as_str());
    assert_eq!(headers["content-type"], "application/json");
    let secret_text = secret.expose_secret();
    assert_eq!(
        verified_by_reference(&secret_text, headers, body),
        "verified"
    );
    let other = WebhookSecret::generate().expose_secret();
    assert!(verified_by_reference(&other, headers, body).starts_with("refused"));
    let text = String::from_utf8_lossy(body);
    assert!(!text.contains(key.key.expose_secret()));
    assert!(!format!("{secret:?}").contains(&secret_text[6..]));
}

#[tokio::test]
async fn dispatchers_of_two_instances_on_postgres_deliver_each_event_once_in_order() {
    let schema = common::servers::unique("nouvel_test");
    let url = common::servers::database_url();
    let one = common::servers::postgres_store_at(&url, &schema).await;
    let two = common::servers::postgres_store_at(&url, &schema).await;
    let keys = Profile::nouvel().key_manager(one);
    let sink = Sink::default();
    let dispatchers = [
        EventDispatcher::new(keys.clone()).sink(sink.clone()),
        EventDispatcher::new(Profile::nouvel().key_manager(two)).sink(sink.clone()),
    ];
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let mut written = Vec::new();
    for n in 0..20 {
        let key = keys
            .create_key(
                &account.id,
                KeySpec::new(format!("Key {n}"), [nouvel::GENERATE]),
            )
            .await
            .unwrap();
        keys.disable_key(&account.id, &key.info.id).await.unwrap();
        keys.enable_key(&account.id, &key.info.id).await.unwrap();
        keys.delete_key(&account.id, &key.info.id).await.unwrap();
        written.push(key.info.id);
    }

    // Both at once, pass after pass, until nothing is left.
    let [a, b] = &dispatchers;
    loop {
        let (x, y) = tokio::join!(a.run_once(), b.run_once());
        if x.unwrap() + y.unwrap() == 0 {
            break;
        }
    }
    let ids = sink.ids();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(ids.len(), 80, "every event delivered");
    assert!(counts.values().all(|&n| n == 1), "each once: {counts:?}");
    let took = sink.took();
    for key in written {
        let kinds: Vec<EventKind> = took
            .iter()
            .filter(|(_, k)| k == key.as_str())
            .map(|(kind, _)| *kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::KeyCreated,
                EventKind::KeyDisabled,
                EventKind::KeyEnabled,
                EventKind::KeyDeleted
            ],
            "in order per key"
        );
    }
}
