//! The conformance kit for key storage (feature `testing`): the behaviour every
//! [`KeyStorage`] must have, as one function to run from a test.
//!
//! ```
//! use nouvel_auth::{testing, MemoryKeyStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // In a test of your own store: `testing::conformance(MyStore::connect(…).await).await;`
//! testing::conformance(MemoryKeyStore::new()).await;
//! # });
//! ```
//!
//! It drives the storage through a [`KeyManager`] on a [`ManualClock`], on accounts it
//! makes itself (so a shared database is fine), and panics with the name of the first
//! behaviour that does not hold:
//!
//! * accounts: created, read back as written, plans changed; unknown ids are `None`;
//! * keys: created, read back exactly as made, listed newest first, deleted keys left
//!   out, keys of other accounts invisible;
//! * lookups: live keys found with their record; unknown, deleted and never-made
//!   digests not found; expired keys still found (the layer refuses them); plan changes
//!   seen at once;
//! * rotation: the replacement made with the old key's name, permissions, option,
//!   limits and networks, the old key's expiration brought forward, counting in the
//!   window of the first key of its chain; a rotated key rotated no more, and of concurrent rotations of one
//!   key exactly one replacement;
//! * states and environments: a disabled key still found (the layer refuses it), listed
//!   `disabled`, enabled again; an expired key enabled stays expired; another account
//!   cannot disable a key; the environment read back, kept by rotation, filtered on;
//! * exposure: a key a scanner found marked once with where it was found, disabled or only
//!   reported, its audit entry written once (by the scanner), other accounts' keys and
//!   unknown keys not found;
//! * usage: batches added to the totals and the latest times kept;
//! * ids the storage never made (NUL, non-ASCII, very long) answer "not found", never an
//!   error;
//! * concurrent creates all land, each once;
//! * refused actions (bad input, wrong plan, unknown key) leave nothing behind;
//! * the audit log: one entry per action, with its actor and details, listed newest first
//!   a page at a time, none for a refused action, none holding a key or a digest, and
//!   pruned by age.
//!
//! A store that keeps events runs [`outbox_conformance`] too.
//!
//! A store with transactions also runs [`recovers_from_failed_commits`]: a write whose
//! commit fails (a full disk) is an error and leaves nothing, and the store writes again
//! once commits succeed.

use crate::nouvel;
use std::{collections::HashSet, time::Duration};

use time::{macros::datetime, OffsetDateTime};

use crate::{
    clock::ManualClock,
    events::{Event, EventKind, PendingEvent, Settlement},
    manage::{Actor, ActorKind, AuditAction, KeyStatus, NewKey, AUDIT_RETENTION},
    store::EventOutbox,
    usage::{Granularity, UsageBucket},
    Account, AccountId, ApiKey, Clock, Environment, Expiration, KeyId, KeyManager, KeySpec,
    KeyStorage, ManageError, Permissions, Plan, Profile, RateLimit, RateLimits, StoredKey, Usage,
    UsageReport,
};

/// The instant the kit's clock starts at. Storage is never asked for the time, so any
/// start works; this one is in the future of the crate's writing.
const T0: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

/// Runs every behaviour of the [module](self) against `storage`; panics at the first that
/// does not hold, naming it.
pub async fn conformance<S: KeyStorage>(storage: S) {
    let kit = Kit::new(storage);
    kit.accounts().await;
    kit.keys_read_back_and_list().await;
    kit.lookups().await;
    kit.rotation().await;
    kit.deletion().await;
    kit.states_and_environments().await;
    kit.exposure().await;
    kit.usage().await;
    kit.ids_never_made().await;
    kit.concurrent_creates().await;
    kit.refusals_leave_nothing().await;
    // Last: it moves the clock 400 days on, and prunes.
    kit.audit_log().await;
}

/// Runs, against `storage`, what a store must do when a commit fails: `fail_commits(true)`
/// makes every later commit of a management write fail, as a full disk does (a test can
/// arm a deferred constraint that every audit entry trips), `fail_commits(false)` lets
/// them succeed again. Panics at the first behaviour that does not hold:
///
/// * while commits fail, every write is an error, never answered as done, and leaves
///   nothing: the keys, states and plans read back as before, no audit entry;
/// * once they succeed again, with no restart, every write lands and is seen by lookups:
///   a deleted key is not found, a new key is, a disabled key is found disabled, a plan
///   change is seen, usage adds up.
///
/// ```no_run
/// # async fn run(store: nouvel_auth::MemoryKeyStore) {
/// // In a test of your own store, with a way to make its commits fail:
/// nouvel_auth::testing::recovers_from_failed_commits(store, async |fail: bool| {
///     // arm or disarm the failure
/// })
/// .await;
/// # }
/// ```
pub async fn recovers_from_failed_commits<S: KeyStorage>(
    storage: S,
    fail_commits: impl AsyncFn(bool),
) {
    let kit = Kit::new(storage);
    let account = kit.account(nouvel::SCALE).await;
    let deleted = kit
        .key(&account, KeySpec::new("Deleted", [nouvel::GENERATE]))
        .await;
    let disabled = kit
        .key(&account, KeySpec::new("Disabled", [nouvel::GENERATE]))
        .await;
    let before = ok("list keys", kit.keys.keys(&account.id).await);

    fail_commits(true).await;
    let keys = &kit.keys;
    let spec = || KeySpec::new("Created", [nouvel::GENERATE]);
    let failed = [
        (
            "a creation",
            keys.create_key(&account.id, spec()).await.err(),
        ),
        (
            "a deletion",
            keys.delete_key(&account.id, &deleted.info.id).await.err(),
        ),
        (
            "a disabling",
            keys.disable_key(&account.id, &disabled.info.id).await.err(),
        ),
        (
            "a plan change",
            keys.set_plan(&account.id, nouvel::GROWTH).await.err(),
        ),
        (
            "a rotation",
            keys.rotate_key(&account.id, &disabled.info.id, Duration::ZERO)
                .await
                .err(),
        ),
        (
            "an account's creation",
            keys.create_account("Failed", nouvel::SCALE).await.err(),
        ),
    ];
    fail_commits(false).await;
    for (write, error) in failed {
        check(
            "a write whose commit fails is a backend error",
            matches!(error, Some(ManageError::Backend(_))),
            (write, &error),
        );
    }
    let after = ok("list keys", kit.keys.keys(&account.id).await);
    check(
        "writes whose commit failed leave nothing",
        after == before,
        &after,
    );
    let record = kit.lookup(&disabled.key).await;
    check(
        "writes whose commit failed change no lookup",
        kit.lookup(&deleted.key).await.is_some()
            && record
                .as_ref()
                .is_some_and(|r| !r.disabled && r.plan == nouvel::SCALE),
        &record,
    );

    ok(
        "delete a key after a failed commit",
        kit.keys.delete_key(&account.id, &deleted.info.id).await,
    );
    check(
        "a deletion after a failed commit is seen by lookups",
        kit.lookup(&deleted.key).await.is_none(),
        "found",
    );
    let created = kit.key(&account, spec()).await;
    check(
        "a creation after a failed commit is seen by lookups",
        kit.lookup(&created.key).await.is_some(),
        "not found",
    );
    ok(
        "disable a key after a failed commit",
        kit.keys.disable_key(&account.id, &disabled.info.id).await,
    );
    ok(
        "change a plan after a failed commit",
        kit.keys.set_plan(&account.id, nouvel::BUSINESS).await,
    );
    let record = kit.lookup(&disabled.key).await;
    check(
        "a state and a plan changed after a failed commit are seen by lookups",
        record
            .as_ref()
            .is_some_and(|r| r.disabled && r.plan == nouvel::BUSINESS),
        &record,
    );
    let report = UsageReport {
        key_id: created.info.id.clone(),
        usage: Usage {
            admitted: 3,
            ..Usage::default()
        },
        last_used_at: None,
        hours: vec![UsageBucket {
            admitted: 3,
            ..UsageBucket::new(T0)
        }],
        permissions_used: Permissions::default(),
    };
    ok(
        "record usage after a failed commit",
        kit.keys.storage().record_usage(&[report]).await,
    );
    let info = ok(
        "read a key",
        kit.keys.key(&account.id, &created.info.id).await,
    );
    check(
        "usage recorded after a failed commit adds up",
        info.usage.admitted == 3,
        info.usage,
    );
    let page = ok(
        "list the audit log",
        kit.keys.audit(&account.id, None, 500).await,
    );
    let actions: Vec<AuditAction> = page.entries.iter().map(|e| e.action).collect();
    check(
        "the audit log holds what landed, and nothing of what failed",
        actions
            == [
                AuditAction::PlanChanged,
                AuditAction::KeyDisabled,
                AuditAction::KeyCreated,
                AuditAction::KeyDeleted,
                AuditAction::KeyCreated,
                AuditAction::KeyCreated,
                AuditAction::AccountCreated,
            ],
        &actions,
    );
}

/// Runs, against `storage` (a store of its own: it settles every event it finds), what an
/// [`EventOutbox`] must do: each key action's event written with it, and none for a
/// refused one; claims that hand out a key's events in order, one at a time, and honour
/// leases and retry times; settlements kept; the sweep's marks keeping an event to once
/// until it is pruned; keys found by expiration.
pub async fn outbox_conformance<S: EventOutbox>(storage: S) {
    let kit = Kit::new(storage);
    let outbox = kit.keys.storage();
    let lease = Duration::from_secs(60);
    let claim = async |at: OffsetDateTime| {
        ok(
            "claim events",
            outbox.claim_events(at, at + lease, 1000).await,
        )
    };
    let settle = async |pending: &PendingEvent, settlement: Settlement, at: OffsetDateTime| {
        ok(
            "settle an event",
            outbox.settle_event(pending.seq, settlement, at).await,
        );
    };
    // What earlier tests left: settled, so that what follows starts from nothing pending.
    let later = T0 + Duration::from_secs(1000 * 86_400);
    loop {
        let left = claim(later).await;
        if left.is_empty() {
            break;
        }
        for pending in &left {
            settle(pending, Settlement::Delivered, T0).await;
        }
    }

    let account = kit.account(nouvel::SCALE).await;
    let first = kit
        .key(&account, KeySpec::new("First", [nouvel::GENERATE]))
        .await;
    ok(
        "disable a key",
        kit.keys.disable_key(&account.id, &first.info.id).await,
    );
    let second = kit
        .key(&account, KeySpec::new("Second", [nouvel::PUBLISH]))
        .await;
    let rotation = ok(
        "rotate a key",
        kit.keys
            .rotate_key(&account.id, &second.info.id, Duration::ZERO)
            .await,
    );
    let refused = kit
        .keys
        .delete_key(&account.id, &"key_never_made".into())
        .await;
    check("a refused deletion", refused.is_err(), &refused);

    let now = kit.clock.now();
    let kinds = |claimed: &[PendingEvent]| -> Vec<(EventKind, Option<KeyId>)> {
        claimed
            .iter()
            .map(|p| (p.event.kind, p.event.key_id.clone()))
            .collect()
    };
    let claimed = claim(now).await;
    check(
        "a claim hands out the first event of each key, in the order they were written",
        kinds(&claimed)
            == [
                (EventKind::KeyCreated, Some(first.info.id.clone())),
                (EventKind::KeyCreated, Some(second.info.id.clone())),
            ],
        kinds(&claimed),
    );
    let created = &claimed[0];
    let json = created.event.to_json();
    check(
        "an event carries its account, time and data, never a secret or a digest",
        created.event.account_id == account.id
            && created.event.at == now
            && created.event.data.get("name") == Some(&"First".into())
            && created.attempts == 0
            && created.delivered_to == 0
            && !json.contains(first.key.expose_secret())
            && !json.contains(&hex(&outbox.digest(&first.key))),
        &json,
    );
    check(
        "events are not claimed again while leased, nor a key's later ones",
        claim(now).await.is_empty(),
        "claimed",
    );
    settle(&claimed[0], Settlement::Delivered, now).await;
    let retry_at = now + Duration::from_secs(10);
    settle(
        &claimed[1],
        Settlement::Retry {
            at: retry_at,
            attempts: 1,
            delivered_to: 0b1,
        },
        now,
    )
    .await;
    let claimed = claim(now).await;
    check(
        "a delivered event makes way for the key's next; a retry waits for its time",
        kinds(&claimed) == [(EventKind::KeyDisabled, Some(first.info.id.clone()))],
        kinds(&claimed),
    );
    settle(&claimed[0], Settlement::Delivered, now).await;
    let claimed = claim(retry_at).await;
    check(
        "a retry is claimed at its time with its attempts and the sinks that took it",
        kinds(&claimed) == [(EventKind::KeyCreated, Some(second.info.id.clone()))]
            && claimed[0].attempts == 1
            && claimed[0].delivered_to == 0b1,
        &claimed,
    );
    let again = claim(retry_at + lease).await;
    check(
        "an event whose lease ran out is claimed again",
        again.len() == 1 && again[0].seq == claimed[0].seq,
        &again,
    );
    settle(&again[0], Settlement::Abandoned, retry_at).await;
    let claimed = claim(retry_at + lease).await;
    check(
        "an abandoned event makes way for the key's next: the rotation, with its replacement",
        kinds(&claimed) == [(EventKind::KeyRotated, Some(second.info.id.clone()))]
            && claimed[0].event.data.get("replacement_id")
                == Some(&rotation.info.id.as_str().into()),
        &claimed,
    );
    settle(&claimed[0], Settlement::Delivered, now).await;
    check(
        "a refused action and an account's creation write no event",
        claim(later).await.is_empty(),
        "claimed",
    );

    let swept = Event::new(
        EventKind::KeyExpiring,
        &account.id,
        Some(&first.info.id),
        now,
    );
    let mark = format!("key.expiring:{}", first.info.id);
    let added = ok("add an event", outbox.add_event(&swept, &mark).await);
    let repeated = Event::new(
        EventKind::KeyExpiring,
        &account.id,
        Some(&first.info.id),
        now,
    );
    let twice = ok("add an event", outbox.add_event(&repeated, &mark).await);
    check(
        "an event with a kept mark is not added",
        added && !twice,
        (added, twice),
    );
    let claimed = claim(now).await;
    check(
        "an added event is claimed",
        claimed.len() == 1 && claimed[0].event == swept,
        &claimed,
    );
    settle(&claimed[0], Settlement::Delivered, now).await;
    let pruned = ok("prune events", outbox.prune_events(now).await);
    check(
        "finished events are pruned by age: none before",
        pruned == 0,
        pruned,
    );
    let pruned = ok(
        "prune events",
        outbox.prune_events(now + Duration::from_secs(1)).await,
    );
    check("finished events are pruned by age", pruned >= 4, pruned);
    let after = Event::new(
        EventKind::KeyExpiring,
        &account.id,
        Some(&first.info.id),
        now,
    );
    let added = ok("add an event", outbox.add_event(&after, &mark).await);
    check("a pruned event's mark is gone with it", added, added);

    let week = kit
        .key(
            &account,
            KeySpec::new("A week", [nouvel::GENERATE]).expiration(Expiration::Days7),
        )
        .await;
    let ends = now + Duration::from_secs(7 * 86_400);
    let found = |keys: Vec<StoredKey>| keys.iter().any(|key| key.id == week.info.id);
    let within = ok("find expiring keys", outbox.keys_expiring(ends, ends).await);
    let before = ok(
        "find expiring keys",
        outbox
            .keys_expiring(now, ends - Duration::from_secs(1))
            .await,
    );
    check(
        "a key is found by its expiration, in [from, to]",
        found(within) && !found(before),
        "",
    );
    ok(
        "delete a key",
        kit.keys.delete_key(&account.id, &week.info.id).await,
    );
    let deleted = ok("find expiring keys", outbox.keys_expiring(ends, ends).await);
    check(
        "a deleted key is not found by its expiration",
        !found(deleted),
        "",
    );
}

struct Kit<S> {
    clock: ManualClock,
    keys: KeyManager<S>,
}

/// `Ok` or a panic naming the behaviour that failed and the error.
#[track_caller]
fn ok<T, E: std::fmt::Debug>(behaviour: &str, result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("conformance: {behaviour}: failed with {error:?}"),
    }
}

/// Networks to keep and read back: IPv4 and IPv6, a network and a host.
fn office() -> crate::network::Networks {
    crate::network::Networks::parse(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"])
        .expect("networks")
}

/// A digest as text, to look for in what a store wrote.
fn hex(digest: &crate::KeyDigest) -> String {
    digest
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[track_caller]
fn check(behaviour: &str, holds: bool, detail: impl std::fmt::Debug) {
    assert!(holds, "conformance: {behaviour}: {detail:?}");
}

impl<S: KeyStorage> Kit<S> {
    /// A kit over `storage`, Nouvel's profile on a manual clock.
    fn new(storage: S) -> Self {
        let clock = ManualClock::new(T0);
        Self {
            keys: Profile::nouvel().clock(clock.clone()).key_manager(storage),
            clock,
        }
    }

    async fn account(&self, plan: Plan) -> Account {
        ok(
            "create an account",
            self.keys.create_account("Conformance", plan).await,
        )
    }

    async fn key(&self, account: &Account, spec: KeySpec) -> NewKey {
        ok(
            "create a key",
            self.keys.create_key(&account.id, spec).await,
        )
    }

    async fn lookup(&self, key: &ApiKey) -> Option<std::sync::Arc<crate::KeyRecord>> {
        let storage = self.keys.storage();
        ok(
            "look a key up",
            storage.lookup(&storage.digest(key), self.clock.now()).await,
        )
    }

    async fn exposure(&self) {
        let account = self.account(nouvel::SCALE).await;
        let other = self.account(nouvel::SCALE).await;
        let found = self
            .key(&account, KeySpec::new("Found", [nouvel::GENERATE]))
            .await;
        let reported = self
            .key(&account, KeySpec::new("Reported", [nouvel::GENERATE]))
            .await;
        let scanner = self.keys.clone().acting_as(Actor::scanner("github"));
        let url = "https://github.com/acme/app/blob/main/.env";
        let first = scanner
            .expose_key(&account.id, &found.info.id, url, "content", true)
            .await;
        let again = scanner
            .expose_key(
                &account.id,
                &found.info.id,
                "https://elsewhere",
                "commit",
                true,
            )
            .await;
        check(
            "a found key is marked once",
            matches!((&first, &again), (Ok(true), Ok(false))),
            (&first, &again),
        );
        let info = ok(
            "read a key",
            self.keys.key(&account.id, &found.info.id).await,
        );
        let record = self.lookup(&found.key).await;
        check(
            "a found key is disabled, with where it was found first",
            info.status == KeyStatus::Disabled
                && info.exposure.as_ref().is_some_and(|e| {
                    e.url == url && e.source == "content" && e.at == self.clock.now()
                })
                && record.is_some_and(|r| r.disabled),
            &info,
        );
        let only = scanner
            .expose_key(&account.id, &reported.info.id, url, "commit", false)
            .await;
        let info = ok(
            "read a key",
            self.keys.key(&account.id, &reported.info.id).await,
        );
        check(
            "a key only reported is marked and stays enabled",
            matches!(only, Ok(true)) && info.exposure.is_some() && info.status == KeyStatus::Active,
            &info,
        );
        let elsewhere = scanner
            .expose_key(&other.id, &found.info.id, url, "content", true)
            .await;
        let unknown = scanner
            .expose_key(&account.id, &"key_never_made".into(), url, "content", true)
            .await;
        check(
            "another account's key and an unknown key are not found",
            matches!(elsewhere, Err(ManageError::NotFound))
                && matches!(unknown, Err(ManageError::NotFound)),
            (&elsewhere, &unknown),
        );
        let page = ok(
            "list the audit log",
            self.keys.audit(&account.id, None, 50).await,
        );
        let exposed: Vec<_> = page
            .entries
            .iter()
            .filter(|e| e.action == AuditAction::KeyExposed)
            .collect();
        check(
            "each found key has one audit entry, by the scanner, with where it was found",
            exposed.len() == 2
                && exposed.iter().all(|e| e.actor == Actor::scanner("github"))
                && exposed
                    .iter()
                    .any(|e| e.key_id.as_ref() == Some(&found.info.id) && e.details["url"] == url),
            &exposed,
        );
    }

    async fn accounts(&self) {
        let made = self.account(nouvel::SCALE).await;
        let read = ok("read an account", self.keys.account(&made.id).await);
        check(
            "an account reads back as written",
            read == made,
            (&read, &made),
        );
        let changed = ok(
            "change a plan",
            self.keys.set_plan(&made.id, nouvel::GROWTH).await,
        );
        check(
            "a plan change is kept",
            changed.plan == nouvel::GROWTH,
            &changed,
        );
        let read = ok("read an account", self.keys.account(&made.id).await);
        check(
            "a plan change reads back",
            read.plan == nouvel::GROWTH,
            &read,
        );
        let unknown = self.keys.account(&"acc_never_made".into()).await;
        check(
            "an unknown account is not found",
            matches!(unknown, Err(ManageError::NotFound)),
            &unknown,
        );
        // A name of this run alone, so a store that keeps earlier runs' accounts passes too.
        let name = crate::key::random_id("Named ");
        let first = ok(
            "create an account",
            self.keys.create_account(&name, nouvel::SCALE).await,
        );
        self.clock.advance(std::time::Duration::from_secs(1));
        let second = ok(
            "create an account",
            self.keys.create_account(&name, nouvel::STARTER).await,
        );
        let storage = self.keys.storage();
        let named = ok("find accounts by name", storage.accounts_named(&name).await);
        check(
            "accounts are found by their exact name, oldest first",
            named == [first, second],
            &named,
        );
        let none = ok(
            "find accounts by name",
            storage.accounts_named(&name.to_lowercase()).await,
        );
        check("a name no account has finds none", none.is_empty(), &none);
    }

    async fn keys_read_back_and_list(&self) {
        let account = self.account(nouvel::SCALE).await;
        let first = self
            .key(
                &account,
                KeySpec::new("First", [nouvel::GENERATE, nouvel::PROJECTS_READ])
                    .expiration(Expiration::Days30)
                    .rate_limits(
                        RateLimits::new([
                            RateLimit::new(5, Duration::from_secs(10)),
                            RateLimit::per_day(1_000),
                            RateLimit::per_month(20_000).per_account(),
                        ])
                        .expect("three distinct limits"),
                    )
                    .allowed_networks(office()),
            )
            .await;
        self.clock.advance(Duration::from_secs(1));
        let second = self
            .key(
                &account,
                KeySpec::new("Second", [nouvel::PUBLISH]).expiration(Expiration::Never),
            )
            .await;
        let read = ok(
            "read a key",
            self.keys.key(&account.id, &first.info.id).await,
        );
        check(
            "a key reads back exactly as made",
            read == first.info,
            (&read, &first.info),
        );
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        check(
            "keys are listed newest first, as made",
            listed == [second.info.clone(), first.info.clone()],
            &listed,
        );
        // Made in the same instant: the id decides, descending.
        self.clock.advance(Duration::from_secs(1));
        let (a, b) = (
            self.key(&account, KeySpec::new("Same", [nouvel::PUBLISH]))
                .await,
            self.key(&account, KeySpec::new("Same", [nouvel::PUBLISH]))
                .await,
        );
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        let ids: Vec<&KeyId> = listed.iter().take(2).map(|k| &k.id).collect();
        let mut expected = [&a.info.id, &b.info.id];
        expected.sort_by(|x, y| y.cmp(x));
        check(
            "keys made in one instant are listed by id, descending",
            ids == expected,
            (&ids, &expected),
        );
        let other = self.account(nouvel::SCALE).await;
        let theirs = self.keys.key(&other.id, &first.info.id).await;
        check(
            "another account's key is not found",
            matches!(theirs, Err(ManageError::NotFound)),
            &theirs,
        );
        let none = ok("list keys", self.keys.keys(&other.id).await);
        check("another account lists none of them", none.is_empty(), &none);
    }

    async fn lookups(&self) {
        let account = self.account(nouvel::SCALE).await;
        let made = self
            .key(
                &account,
                KeySpec::new("Looked up", [nouvel::ANALYTICS_READ])
                    .expiration(Expiration::Days7)
                    .rate_limits(RateLimit::new(7, Duration::from_secs(70))),
            )
            .await;
        let Some(record) = self.lookup(&made.key).await else {
            panic!("conformance: a live key is found by its digest: not found");
        };
        let expected = crate::KeyRecord::new(
            made.info.id.clone(),
            account.id.clone(),
            "Looked up",
            nouvel::SCALE,
            nouvel::ANALYTICS_READ.into(),
        )
        .expires_at(made.info.expires_at)
        .rate_limits(Some(RateLimit::new(7, Duration::from_secs(70)).into()));
        check(
            "a lookup answers the key's record",
            *record == expected,
            (&record, &expected),
        );
        check(
            "an unknown digest is not found",
            self.lookup(&ApiKey::generate()).await.is_none(),
            "found",
        );
        ok(
            "change a plan",
            self.keys.set_plan(&account.id, nouvel::STARTER).await,
        );
        let record = self.lookup(&made.key).await;
        check(
            "a lookup answers the account's plan as changed",
            record.as_ref().is_some_and(|r| r.plan == nouvel::STARTER),
            &record,
        );
        self.clock.advance(Duration::from_secs(8 * 86_400));
        let record = self.lookup(&made.key).await;
        check(
            "an expired key is still found (the layer refuses it)",
            record.is_some(),
            "not found",
        );
        let info = ok(
            "read a key",
            self.keys.key(&account.id, &made.info.id).await,
        );
        check(
            "an expired key lists as expired",
            info.status == KeyStatus::Expired,
            &info,
        );
    }

    async fn rotation(&self) {
        let account = self.account(nouvel::BUSINESS).await;
        let old = self
            .key(
                &account,
                KeySpec::new("Rotated", [nouvel::GENERATE, nouvel::COPILOT_CHAT])
                    .expiration(Expiration::Days30)
                    .rate_limits(RateLimit::new(3, Duration::from_secs(30)))
                    .allowed_networks(office()),
            )
            .await;
        self.clock.advance(Duration::from_secs(60));
        let new = ok(
            "rotate a key",
            self.keys
                .rotate_key(&account.id, &old.info.id, Duration::from_secs(600))
                .await,
        );
        check(
            "a replacement keeps the name and permissions",
            new.info.name == old.info.name && new.info.permissions == old.info.permissions,
            &new.info,
        );
        check(
            "a replacement's option counts from the rotation",
            new.info.expires_at == Some(self.clock.now() + Duration::from_secs(30 * 86_400)),
            &new.info,
        );
        let record = self.lookup(&new.key).await;
        check(
            "a replacement keeps the limit and the networks",
            record.as_ref().is_some_and(|r| {
                r.rate_limits == Some(RateLimit::new(3, Duration::from_secs(30)).into())
                    && r.allowed_networks == Some(office())
            }),
            &record,
        );
        check(
            "a replacement counts in its predecessor's window",
            record
                .as_ref()
                .is_some_and(|r| *r.limit_id() == old.info.id),
            &record,
        );
        let grace_end = self.clock.now() + Duration::from_secs(600);
        let read = ok("read a key", self.keys.key(&account.id, &old.info.id).await);
        check(
            "the old key expires at the end of its grace",
            read.expires_at == Some(grace_end),
            &read,
        );
        let record = self.lookup(&old.key).await;
        check(
            "lookups see the old key's new expiration",
            record
                .as_ref()
                .is_some_and(|r| r.expires_at == Some(grace_end)),
            &record,
        );
        // A key with a replacement is rotated no more, and nothing is written.
        let again = self
            .keys
            .rotate_key(&account.id, &old.info.id, Duration::from_secs(86_400))
            .await;
        check(
            "a rotated key cannot be rotated again",
            matches!(again, Err(ManageError::AlreadyRotated)),
            &again,
        );
        let read = ok("read a key", self.keys.key(&account.id, &old.info.id).await);
        check(
            "a refused rotation leaves the expiration as it was",
            read.expires_at == Some(grace_end),
            &read,
        );
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        check(
            "the old key and its one replacement are listed",
            listed.len() == 2 && listed[0].id == new.info.id,
            &listed,
        );
        // Concurrent rotations of one key: exactly one replacement.
        let rotations = (0..8).map(|_| {
            self.keys
                .rotate_key(&account.id, &new.info.id, Duration::from_secs(60))
        });
        let answers = futures_util::future::join_all(rotations).await;
        let made = answers.iter().filter(|answer| answer.is_ok()).count();
        let refused = answers
            .iter()
            .filter(|answer| matches!(answer, Err(ManageError::AlreadyRotated)))
            .count();
        let chained = answers.iter().flatten().next().map(|n| &n.key);
        let record = match chained {
            Some(key) => self.lookup(key).await,
            None => None,
        };
        check(
            "a replacement of a replacement counts in the first key's window",
            record
                .as_ref()
                .is_some_and(|r| *r.limit_id() == old.info.id),
            &record,
        );
        check(
            "concurrent rotations of one key make exactly one replacement",
            made == 1 && refused == answers.len() - 1,
            answers
                .iter()
                .map(|a| a.as_ref().map(|n| n.info.id.clone()))
                .collect::<Vec<_>>(),
        );
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        check(
            "three keys in all, after the race",
            listed.len() == 3,
            &listed,
        );
    }

    async fn states_and_environments(&self) {
        let account = self.account(nouvel::SCALE).await;
        let staging: Environment = "staging".parse().expect("a valid label");
        let made = self
            .key(
                &account,
                KeySpec::new("Switched", [nouvel::GENERATE])
                    .expiration(Expiration::Days7)
                    .environment(staging.clone()),
            )
            .await;
        let plain = self
            .key(&account, KeySpec::new("Plain", [nouvel::GENERATE]))
            .await;
        check(
            "a key reads back its environment",
            made.info.environment.as_ref() == Some(&staging) && plain.info.environment.is_none(),
            (&made.info, &plain.info),
        );
        let record = self.lookup(&made.key).await;
        check(
            "a lookup answers the environment",
            record
                .as_ref()
                .is_some_and(|r| r.environment.as_ref() == Some(&staging) && !r.disabled),
            &record,
        );
        let listed = ok(
            "list keys of an environment",
            self.keys.keys_in(&account.id, &staging).await,
        );
        check(
            "a list of an environment holds only its keys",
            listed.len() == 1 && listed[0].id == made.info.id,
            &listed,
        );
        let other = self.account(nouvel::SCALE).await;
        let theirs = self.keys.disable_key(&other.id, &made.info.id).await;
        check(
            "another account cannot disable a key",
            matches!(theirs, Err(ManageError::NotFound)),
            &theirs,
        );
        let disabled = ok(
            "disable a key",
            self.keys.disable_key(&account.id, &made.info.id).await,
        );
        check(
            "a disabled key lists as disabled",
            disabled.status == KeyStatus::Disabled,
            &disabled,
        );
        let record = self.lookup(&made.key).await;
        check(
            "a disabled key is still found, disabled (the layer refuses it)",
            record.as_ref().is_some_and(|r| r.disabled),
            &record,
        );
        let read = ok(
            "read a key",
            self.keys.key(&account.id, &made.info.id).await,
        );
        check(
            "a disabled key reads back disabled",
            read.status == KeyStatus::Disabled,
            &read,
        );
        let rotated = ok(
            "rotate a disabled key",
            self.keys
                .rotate_key(&account.id, &made.info.id, Duration::from_secs(60))
                .await,
        );
        check(
            "a replacement keeps the environment, and is enabled",
            rotated.info.environment.as_ref() == Some(&staging)
                && rotated.info.status == KeyStatus::Active,
            &rotated.info,
        );
        let enabled = ok(
            "enable a key",
            self.keys.enable_key(&account.id, &made.info.id).await,
        );
        check(
            "an enabled key is active again",
            enabled.status == KeyStatus::Active,
            &enabled,
        );
        let record = self.lookup(&made.key).await;
        check(
            "lookups see a key enabled",
            record.as_ref().is_some_and(|r| !r.disabled),
            &record,
        );
        ok(
            "disable a key",
            self.keys.disable_key(&account.id, &plain.info.id).await,
        );
        self.clock.advance(Duration::from_secs(91 * 86_400));
        let enabled = ok(
            "enable a key",
            self.keys.enable_key(&account.id, &plain.info.id).await,
        );
        check(
            "an expired key enabled stays expired",
            enabled.status == KeyStatus::Expired,
            &enabled,
        );
        let never = self
            .keys
            .disable_key(&account.id, &"key_never_made".into())
            .await;
        check(
            "an unknown key cannot be disabled",
            matches!(never, Err(ManageError::NotFound)),
            &never,
        );
    }

    async fn deletion(&self) {
        let account = self.account(nouvel::SCALE).await;
        let kept = self
            .key(&account, KeySpec::new("Kept", [nouvel::PUBLISH]))
            .await;
        let gone = self
            .key(&account, KeySpec::new("Gone", [nouvel::PUBLISH]))
            .await;
        ok(
            "delete a key",
            self.keys.delete_key(&account.id, &gone.info.id).await,
        );
        check(
            "a deleted key is not found by lookups",
            self.lookup(&gone.key).await.is_none(),
            "found",
        );
        let read = self.keys.key(&account.id, &gone.info.id).await;
        check(
            "a deleted key is not found",
            matches!(read, Err(ManageError::NotFound)),
            &read,
        );
        let again = self.keys.delete_key(&account.id, &gone.info.id).await;
        check(
            "a second delete is not found",
            matches!(again, Err(ManageError::NotFound)),
            &again,
        );
        let rotated = self
            .keys
            .rotate_key(&account.id, &gone.info.id, Duration::ZERO)
            .await;
        check(
            "a deleted key cannot be rotated",
            matches!(rotated, Err(ManageError::NotFound)),
            &rotated,
        );
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        check(
            "deleted keys are left out of lists",
            listed
                == [ok(
                    "read a key",
                    self.keys.key(&account.id, &kept.info.id).await,
                )],
            &listed,
        );
        let other = self.account(nouvel::SCALE).await;
        let theirs = self.keys.delete_key(&other.id, &kept.info.id).await;
        check(
            "another account cannot delete a key",
            matches!(theirs, Err(ManageError::NotFound)),
            &theirs,
        );
        check(
            "a key another account tried to delete still works",
            self.lookup(&kept.key).await.is_some(),
            "not found",
        );
    }

    async fn usage(&self) {
        let account = self.account(nouvel::SCALE).await;
        let key = self
            .key(&account, KeySpec::new("Used", [nouvel::GENERATE]))
            .await;
        let at = |seconds| T0 + Duration::from_secs(seconds);
        let rejected = |rate_limited| crate::usage::RejectionCounts {
            rate_limited,
            ..Default::default()
        };
        // T0 is on the hour: each batch's requests in its last request's hour.
        let batch = |admitted, rate_limited, last_used: Option<u64>, last_request| UsageReport {
            key_id: key.info.id.clone(),
            usage: Usage {
                admitted,
                rejected: rejected(rate_limited),
                last_request_at: Some(at(last_request)),
            },
            last_used_at: last_used.map(at),
            hours: vec![UsageBucket {
                admitted,
                rejected: rejected(rate_limited),
                ..UsageBucket::new(Granularity::Hour.start_of(at(last_request)))
            }],
            permissions_used: [nouvel::GENERATE].into_iter().collect(),
        };
        let unknown = UsageReport {
            key_id: "key_never_made".into(),
            ..batch(1, 0, Some(1), 1)
        };
        let storage = self.keys.storage();
        ok(
            "record usage",
            storage
                .record_usage(&[batch(3, 1, Some(20), 30), unknown])
                .await,
        );
        ok(
            "record usage",
            storage.record_usage(&[batch(2, 0, Some(10), 40)]).await,
        );
        let used = ok(
            "read when permissions were last used",
            storage.permissions_last_used(&account.id).await,
        );
        check(
            "a permission's last use is the latest batch's that used it",
            used == [(key.info.id.clone(), nouvel::GENERATE, at(20))],
            &used,
        );
        let info = ok("read a key", self.keys.key(&account.id, &key.info.id).await);
        check(
            "usage batches add up, keeping the latest times",
            info.usage.admitted == 5
                && info.usage.rejected.rate_limited == 1
                && info.usage.last_request_at == Some(at(40))
                && info.last_used_at == Some(at(20)),
            &info,
        );
        // A batch across the turn of the hour: a bucket of each hour, one of the day.
        let mut turn = batch(3, 0, Some(3_601), 3_601);
        turn.hours = vec![
            UsageBucket {
                admitted: 1,
                ..UsageBucket::new(T0)
            },
            UsageBucket {
                admitted: 2,
                ..UsageBucket::new(at(3_600))
            },
        ];
        ok("record usage", storage.record_usage(&[turn]).await);
        let counts = |buckets: &[UsageBucket]| -> Vec<(OffsetDateTime, u64, u64)> {
            buckets
                .iter()
                .map(|b| (b.start, b.admitted, b.rejected.rate_limited))
                .collect()
        };
        let id = &key.info.id;
        let day = Granularity::Day.start_of(T0);
        let hours = ok(
            "read hourly usage",
            storage.usage(id, Granularity::Hour, day, at(86_400)).await,
        );
        check(
            "hourly buckets add up the batches of each hour, oldest first",
            counts(&hours) == [(T0, 6, 1), (at(3_600), 2, 0)],
            counts(&hours),
        );
        let days = ok(
            "read daily usage",
            storage
                .usage(id, Granularity::Day, day, day + Duration::from_secs(86_400))
                .await,
        );
        check(
            "a daily bucket adds up its hours",
            counts(&days) == [(day, 8, 1)],
            counts(&days),
        );
        let of_account = ok(
            "read an account's hourly usage",
            storage
                .account_usage(&account.id, Granularity::Hour, day, at(86_400))
                .await,
        );
        check(
            "an account's buckets are its keys' buckets",
            of_account.len() == 2
                && of_account
                    .iter()
                    .all(|(id, b)| *id == key.info.id && hours.contains(b)),
            &of_account,
        );
        let later = ok(
            "read hourly usage",
            storage
                .usage(id, Granularity::Hour, at(3_600), at(7_200))
                .await,
        );
        check(
            "a range holds the buckets that start in it, its end left out",
            counts(&later) == [(at(3_600), 2, 0)],
            counts(&later),
        );
        let none = ok(
            "read hourly usage",
            storage
                .usage(&"key_never_made".into(), Granularity::Hour, day, at(86_400))
                .await,
        );
        check(
            "a key the store does not hold gets no buckets",
            none.is_empty(),
            counts(&none),
        );
    }

    async fn ids_never_made(&self) {
        let account = self.account(nouvel::SCALE).await;
        let long = "k".repeat(10_000);
        for id in [
            "key_\0",
            "\0",
            "key_ünïcödé",
            "key_'; --",
            long.as_str(),
            "",
        ] {
            let key = KeyId::from(id);
            let read = self.keys.key(&account.id, &key).await;
            check(
                "a key id never made is not found",
                matches!(read, Err(ManageError::NotFound)),
                (id.get(..20), &read),
            );
            let deleted = self.keys.delete_key(&account.id, &key).await;
            check(
                "deleting a key id never made is not found",
                matches!(deleted, Err(ManageError::NotFound)),
                (id.get(..20), &deleted),
            );
            let disabled = self.keys.disable_key(&account.id, &key).await;
            check(
                "disabling a key id never made is not found",
                matches!(disabled, Err(ManageError::NotFound)),
                (id.get(..20), &disabled),
            );
            let account = AccountId::from(id);
            let read = self.keys.account(&account).await;
            check(
                "an account id never made is not found",
                matches!(read, Err(ManageError::NotFound)),
                (id.get(..20), &read),
            );
            let listed = self.keys.keys(&account).await;
            check(
                "listing an account id never made is not found",
                matches!(listed, Err(ManageError::NotFound)),
                (id.get(..20), &listed),
            );
        }
    }

    async fn audit_log(&self) {
        let account = self.account(nouvel::SCALE).await;
        let user = self.keys.clone().acting_as(Actor::user("user_42"));
        let made = ok(
            "create a key",
            user.create_key(
                &account.id,
                KeySpec::new("Audited", [nouvel::GENERATE])
                    .environment("staging".parse().expect("a label")),
            )
            .await,
        );
        let id = &made.info.id;
        self.clock.advance(Duration::from_secs(1));
        let rotated = ok(
            "rotate a key",
            self.keys.rotate_key(&account.id, id, Duration::ZERO).await,
        );
        let refused = self.keys.rotate_key(&account.id, id, Duration::ZERO).await;
        check("a second rotation is refused", refused.is_err(), &refused);
        ok(
            "disable a key",
            user.disable_key(&account.id, &rotated.info.id).await,
        );
        ok(
            "enable a key",
            user.enable_key(&account.id, &rotated.info.id).await,
        );
        ok(
            "change a plan",
            self.keys.set_plan(&account.id, nouvel::BUSINESS).await,
        );
        ok(
            "delete a key",
            user.delete_key(&account.id, &rotated.info.id).await,
        );
        let gone = user.delete_key(&account.id, &rotated.info.id).await;
        check("a second delete is refused", gone.is_err(), &gone);

        let page = ok(
            "list the audit log",
            self.keys.audit(&account.id, None, 500).await,
        );
        let actions: Vec<AuditAction> = page.entries.iter().map(|e| e.action).collect();
        check(
            "every action is one entry, newest first, refusals none",
            actions
                == [
                    AuditAction::KeyDeleted,
                    AuditAction::PlanChanged,
                    AuditAction::KeyEnabled,
                    AuditAction::KeyDisabled,
                    AuditAction::KeyRotated,
                    AuditAction::KeyCreated,
                    AuditAction::AccountCreated,
                ],
            &actions,
        );
        check(
            "a whole log has no next page",
            page.next.is_none(),
            &page.next,
        );
        let entry = |action| {
            page.entries
                .iter()
                .find(|e| e.action == action)
                .expect("listed")
        };
        let created = entry(AuditAction::KeyCreated);
        check(
            "an entry names its account, key and actor",
            created.account_id == account.id
                && created.key_id.as_ref() == Some(id)
                && created.actor == Actor::user("user_42")
                && created.details.get("name").and_then(|v| v.as_str()) == Some("Audited"),
            created,
        );
        check(
            "the library acts as the system",
            entry(AuditAction::KeyRotated).actor.kind == ActorKind::System,
            entry(AuditAction::KeyRotated),
        );
        check(
            "a rotation names its replacement",
            entry(AuditAction::KeyRotated)
                .details
                .get("replacement_id")
                .and_then(|v| v.as_str())
                == Some(rotated.info.id.as_str()),
            entry(AuditAction::KeyRotated),
        );
        let plan = entry(AuditAction::PlanChanged);
        check(
            "a plan change says from and to",
            plan.details.get("from").and_then(|v| v.as_str()) == Some("scale")
                && plan.details.get("to").and_then(|v| v.as_str()) == Some("business"),
            plan,
        );
        let text = serde_json::to_string(&page.entries).unwrap_or_default();
        let digest = hex(&self.keys.storage().digest(&made.key));
        check(
            "no entry holds a key or a digest",
            !text.contains(made.key.expose_secret())
                && !text.contains(rotated.key.expose_secret())
                && !text.contains(&digest),
            &text,
        );

        // Pages.
        let first = ok("list a page", self.keys.audit(&account.id, None, 3).await);
        let Some(cursor) = first.next.clone() else {
            panic!("conformance: a page that is not the last has a next cursor");
        };
        let second = ok(
            "list a page",
            self.keys.audit(&account.id, Some(&cursor), 3).await,
        );
        let third = ok(
            "list a page",
            self.keys
                .audit(&account.id, second.next.as_deref(), 3)
                .await,
        );
        let paged: Vec<_> = [first.entries, second.entries, third.entries].concat();
        check("pages follow each other", paged == page.entries, &paged);
        check("the last page says so", third.next.is_none(), &third.next);
        let theirs = self.account(nouvel::SCALE).await;
        let other = ok(
            "list the audit log",
            self.keys.audit(&theirs.id, None, 50).await,
        );
        check(
            "another account's log holds only its own",
            other.entries.len() == 1 && other.entries[0].account_id == theirs.id,
            &other.entries,
        );

        // Retention.
        self.clock
            .advance(AUDIT_RETENTION + Duration::from_secs(86_400));
        let fresh = self.account(nouvel::SCALE).await;
        let pruned = ok(
            "prune the audit log",
            self.keys.prune_audit(AUDIT_RETENTION).await,
        );
        check("old entries are pruned", pruned >= 8, pruned);
        let left = ok(
            "list the audit log",
            self.keys.audit(&account.id, None, 50).await,
        );
        check(
            "pruned entries are gone",
            left.entries.is_empty(),
            &left.entries,
        );
        let kept = ok(
            "list the audit log",
            self.keys.audit(&fresh.id, None, 50).await,
        );
        check(
            "recent entries stay",
            kept.entries.len() == 1,
            &kept.entries,
        );
    }

    async fn concurrent_creates(&self) {
        let account = self.account(nouvel::SCALE).await;
        let creates = (0..16).map(|i| {
            self.keys.create_key(
                &account.id,
                KeySpec::new(format!("Key {i}"), [nouvel::GENERATE]),
            )
        });
        let made: Vec<NewKey> = futures_util::future::join_all(creates)
            .await
            .into_iter()
            .map(|made| ok("create keys concurrently", made))
            .collect();
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        let listed_ids: HashSet<&KeyId> = listed.iter().map(|k| &k.id).collect();
        check(
            "concurrent creates all land, each once",
            listed.len() == 16 && made.iter().all(|m| listed_ids.contains(&m.info.id)),
            listed.len(),
        );
        for made in &made {
            check(
                "every concurrently made key is found",
                self.lookup(&made.key).await.is_some(),
                &made.info.id,
            );
        }
    }

    async fn refusals_leave_nothing(&self) {
        let account = self.account(nouvel::SCALE).await;
        let bad = KeySpec::new(" ", []).expiration(Expiration::At(T0 - Duration::from_secs(1)));
        let refused = self.keys.create_key(&account.id, bad).await;
        let fields: Vec<String> = match &refused {
            Err(ManageError::Invalid(errors)) => errors.iter().map(|e| e.field.clone()).collect(),
            _ => Vec::new(),
        };
        check(
            "bad input is refused with every field at once",
            fields == ["name", "permissions", "expiration"],
            &refused,
        );
        let kept = self
            .key(&account, KeySpec::new("Kept", [nouvel::GENERATE]))
            .await;
        let too_long = self
            .keys
            .rotate_key(
                &account.id,
                &kept.info.id,
                Duration::from_secs(400 * 86_400),
            )
            .await;
        check(
            "a grace over a year is refused",
            matches!(too_long, Err(ManageError::Invalid(_))),
            &too_long,
        );
        ok(
            "change a plan",
            self.keys.set_plan(&account.id, nouvel::GROWTH).await,
        );
        let refused = self
            .keys
            .create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE]))
            .await;
        check(
            "a plan without keys refuses new keys",
            matches!(&refused, Err(ManageError::PlanRequired { plan, .. }) if *plan == nouvel::GROWTH),
            &refused,
        );
        let refused = self
            .keys
            .rotate_key(&account.id, &kept.info.id, Duration::ZERO)
            .await;
        check(
            "a plan without keys refuses rotations",
            matches!(&refused, Err(ManageError::PlanRequired { plan, .. }) if *plan == nouvel::GROWTH),
            &refused,
        );
        let listed = ok("list keys", self.keys.keys(&account.id).await);
        check(
            "refused actions leave nothing behind",
            listed
                == [ok(
                    "read a key",
                    self.keys.key(&account.id, &kept.info.id).await,
                )]
                && listed[0].expires_at == kept.info.expires_at,
            &listed,
        );
    }
}
