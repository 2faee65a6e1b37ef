//! `CachedKeyStore` over a store that counts its lookups.

mod common;

use nouvel_auth::nouvel;
use nouvel_auth::Profile;
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::T0;
use nouvel_auth::{
    clock::Clock,
    clock::ManualClock,
    key::AccountId,
    key::ApiKey,
    key::KeyDigest,
    manage::NewKey,
    store::UsageReport,
    store::{CachedKeyStore, Invalidation},
    BackendError, KeyManager, KeyRecord, KeySpec, KeyStore, MemoryKeyStore,
};
use std::task::Poll;
use time::OffsetDateTime;

/// A memory store that counts lookups, and whose answers a test can hold back.
#[derive(Clone)]
struct Counting {
    inner: MemoryKeyStore,
    lookups: Arc<AtomicUsize>,
    /// While a test holds this for writing, answers already read wait, as on a slow network.
    answers: Arc<tokio::sync::RwLock<()>>,
}

impl KeyStore for Counting {
    async fn lookup(
        &self,
        digest: &KeyDigest,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<KeyRecord>>, BackendError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.lookup(digest, now).await;
        let _delivered = self.answers.read().await;
        found
    }
    async fn record_usage(&self, reports: &[UsageReport]) -> Result<(), BackendError> {
        self.inner.record_usage(reports).await
    }
    async fn live_digests(&self) -> Result<Option<Vec<KeyDigest>>, BackendError> {
        self.inner.live_digests().await
    }
}

struct Fixture {
    clock: ManualClock,
    counting: Counting,
    /// Manages the keys behind the cache's back, as another instance would.
    elsewhere: KeyManager<MemoryKeyStore>,
    cache: CachedKeyStore<Counting>,
    account: AccountId,
    key: NewKey,
    /// The key's digest, and one no key has.
    known: KeyDigest,
    unknown: KeyDigest,
}

/// A cache, fresh for 30 s, over a counting memory store holding one key.
async fn setup() -> Fixture {
    let clock = ManualClock::new(T0);
    let counting = Counting {
        inner: MemoryKeyStore::new(),
        lookups: Arc::default(),
        answers: Arc::default(),
    };
    let cache =
        CachedKeyStore::with_capacity(counting.clone(), 1_000).fresh_for(Duration::from_secs(30));
    let elsewhere = Profile::nouvel()
        .clock(clock.clone())
        .key_manager(counting.inner.clone());
    let account = elsewhere
        .create_account("Acme", nouvel::SCALE)
        .await
        .unwrap()
        .id;
    let spec = KeySpec::new("k", [nouvel::GENERATE]);
    let key = elsewhere.create_key(&account, spec).await.unwrap();
    Fixture {
        elsewhere,
        known: cache.digest(&key.key),
        unknown: ApiKey::generate().digest(),
        clock,
        counting,
        cache,
        account,
        key,
    }
}

#[tokio::test]
async fn known_and_unknown_keys_are_cached_until_stale() {
    let Fixture {
        clock,
        counting,
        cache,
        known,
        unknown,
        ..
    } = setup().await;
    for _ in 0..5 {
        assert!(cache.lookup(&known, clock.now()).await.unwrap().is_some());
        assert!(cache.lookup(&unknown, clock.now()).await.unwrap().is_none());
    }
    assert_eq!(counting.lookups.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(30));
    cache.lookup(&known, clock.now()).await.unwrap();
    assert_eq!(
        counting.lookups.load(Ordering::SeqCst),
        3,
        "the TTL is the backstop"
    );
}

#[tokio::test]
async fn changes_made_through_the_cache_take_effect_at_once() {
    let clock = ManualClock::new(T0);
    // Fresh for an hour: only the invalidations can make changes visible.
    let cache = CachedKeyStore::new(MemoryKeyStore::new()).fresh_for(Duration::from_secs(3600));
    let keys = Profile::nouvel()
        .clock(clock.clone())
        .key_manager(cache.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    let key = keys
        .create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE]))
        .await
        .unwrap();
    let digest = cache.digest(&key.key);
    assert!(cache.lookup(&digest, clock.now()).await.unwrap().is_some());

    keys.set_plan(&account.id, nouvel::GROWTH).await.unwrap();
    assert_eq!(
        cache
            .lookup(&digest, clock.now())
            .await
            .unwrap()
            .unwrap()
            .plan,
        nouvel::GROWTH
    );
    keys.set_plan(&account.id, nouvel::SCALE).await.unwrap();

    let rotated = keys
        .rotate_key(&account.id, &key.info.id, Duration::ZERO)
        .await
        .unwrap();
    let old = cache.lookup(&digest, clock.now()).await.unwrap().unwrap();
    assert_eq!(old.expires_at, Some(T0));
    let new_digest = cache.digest(&rotated.key);
    assert!(cache
        .lookup(&new_digest, clock.now())
        .await
        .unwrap()
        .is_some());

    keys.delete_key(&account.id, &rotated.info.id)
        .await
        .unwrap();
    assert!(cache
        .lookup(&new_digest, clock.now())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn an_announced_deletion_evicts_the_key() {
    let Fixture {
        clock,
        elsewhere,
        cache,
        account,
        key,
        known: digest,
        ..
    } = setup().await;
    assert!(cache.lookup(&digest, clock.now()).await.unwrap().is_some());
    // Another instance deletes it and announces the key id.
    elsewhere.delete_key(&account, &key.info.id).await.unwrap();
    assert!(
        cache.lookup(&digest, clock.now()).await.unwrap().is_some(),
        "cached until told"
    );
    let announced =
        Invalidation::parse(&Invalidation::Key(key.info.id.clone()).to_string()).unwrap();
    cache.invalidate(&announced);
    assert!(cache.lookup(&digest, clock.now()).await.unwrap().is_none());
}

#[test]
fn invalidations_round_trip_as_text() {
    for change in [
        Invalidation::Key("key_1".into()),
        Invalidation::Account("acc_1".into()),
        Invalidation::All,
    ] {
        assert_eq!(Invalidation::parse(&change.to_string()), Some(change));
    }
    assert_eq!(Invalidation::parse("x:1"), None);
}

#[tokio::test]
async fn only_fresh_entries_answer_without_waiting() {
    let Fixture {
        clock,
        counting,
        cache,
        key,
        known,
        unknown,
        ..
    } = setup().await;
    // Nothing cached: no answer at once, and the wrapped store is not asked for one.
    assert_eq!(cache.lookup_now(&known, clock.now()), Poll::Pending);
    assert_eq!(counting.lookups.load(Ordering::SeqCst), 0);
    cache.lookup(&known, clock.now()).await.unwrap();
    cache.lookup(&unknown, clock.now()).await.unwrap();
    let Poll::Ready(found) = cache.lookup_now(&known, clock.now()) else {
        panic!("a fresh entry answers at once");
    };
    assert_eq!(found.map(|record| record.id.clone()), Some(key.info.id));
    assert_eq!(cache.lookup_now(&unknown, clock.now()), Poll::Ready(None));
    // Past freshness the layer must ask `lookup`, which refreshes (or serves stale).
    clock.advance(Duration::from_secs(30));
    assert_eq!(cache.lookup_now(&known, clock.now()), Poll::Pending);
    assert_eq!(counting.lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_change_announced_while_a_lookup_is_under_way_is_not_cached_over() {
    let f = setup().await;
    let held = f.counting.answers.write().await;
    let (cache, known, now) = (f.cache.clone(), f.known, f.clock.now());
    let looking = tokio::spawn(async move { cache.lookup(&known, now).await });
    // Until the store has read the key (the lookup then waits for its answer).
    while f.counting.lookups.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Meanwhile another instance deletes the key, and its notification arrives.
    f.elsewhere
        .delete_key(&f.account, &f.key.info.id)
        .await
        .unwrap();
    f.cache
        .invalidate(&Invalidation::Key(f.key.info.id.clone()));
    drop(held);
    // The lookup answers what it read before the change, but the cache does not keep it.
    assert!(looking.await.unwrap().unwrap().is_some());
    assert_eq!(f.cache.lookup(&f.known, now).await.unwrap(), None);
    assert_eq!(f.counting.lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_uncached_key_make_one_query() {
    let f = setup().await;
    let held = f.counting.answers.write().await;
    let lookups: Vec<_> = (0..200)
        .map(|_| {
            let (cache, known, now) = (f.cache.clone(), f.known, f.clock.now());
            tokio::spawn(async move { cache.lookup(&known, now).await })
        })
        .collect();
    while f.counting.lookups.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    for lookup in lookups {
        assert!(lookup.await.unwrap().unwrap().is_some());
    }
    assert_eq!(f.counting.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_flood_of_made_up_keys_costs_one_query_per_hundred_and_real_keys_stay_cached() {
    let f = setup().await;
    assert_eq!(f.cache.live_keys(), None);
    assert_eq!(f.cache.refuse_made_up_keys().await.unwrap(), Some(1));
    assert_eq!(f.cache.live_keys(), Some(1));
    assert!(f
        .cache
        .lookup(&f.known, f.clock.now())
        .await
        .unwrap()
        .is_some());
    let before = f.counting.lookups.load(Ordering::SeqCst);
    for i in 0..20_000u64 {
        let now = f.clock.now() + Duration::from_micros(i);
        assert!(f
            .cache
            .lookup(&ApiKey::generate().digest(), now)
            .await
            .unwrap()
            .is_none());
    }
    let asked = f.counting.lookups.load(Ordering::SeqCst) - before;
    assert_eq!(asked, 200, "one in a hundred asks the store");
    // The cache of 1 000 entries still holds the real key: made-up keys are not cached.
    assert!(f
        .cache
        .lookup(&f.known, f.clock.now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(f.counting.lookups.load(Ordering::SeqCst) - before, 200);

    // A key made on another instance: announced, it is found at once, flood or not.
    let spec = KeySpec::new("elsewhere", [nouvel::GENERATE]);
    let announced = f
        .elsewhere
        .create_key(&f.account, spec.clone())
        .await
        .unwrap();
    f.cache
        .invalidate(&Invalidation::Created(f.cache.digest(&announced.key)));
    let found = f
        .cache
        .lookup(&f.cache.digest(&announced.key), f.clock.now())
        .await
        .unwrap();
    assert!(found.is_some());
    // Not announced yet: found by the once-a-second check, when the flood is over.
    let unannounced = f.elsewhere.create_key(&f.account, spec).await.unwrap();
    let later = f.clock.now() + Duration::from_secs(2);
    let found = f
        .cache
        .lookup(&f.cache.digest(&unannounced.key), later)
        .await
        .unwrap();
    assert!(found.is_some());
    // Missed announcements: every digest is asked about until the keys are loaded again,
    // which the cache does by itself.
    f.cache.invalidate(&Invalidation::All);
    assert_eq!(f.cache.live_keys(), None);
    while f.cache.live_keys().is_none() {
        tokio::task::yield_now().await;
    }
    assert_eq!(f.cache.live_keys(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_makes_one_lookup_a_second_wait_and_the_rest_are_served_stale() {
    let f = setup().await;
    let cache = f.cache.clone().timeout(Duration::from_millis(500));
    assert!(cache
        .lookup(&f.known, f.clock.now())
        .await
        .unwrap()
        .is_some());
    f.clock.advance(Duration::from_secs(31));
    let held = f.counting.answers.write().await;
    let before = f.counting.lookups.load(Ordering::SeqCst);
    // The first waits its timeout, then is served stale.
    let started = tokio::time::Instant::now();
    assert!(cache
        .lookup(&f.known, f.clock.now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    // For the next second, served stale without asking.
    for _ in 0..50 {
        let started = tokio::time::Instant::now();
        assert!(cache
            .lookup(&f.known, f.clock.now())
            .await
            .unwrap()
            .is_some());
        assert_eq!(started.elapsed(), Duration::ZERO, "served without waiting");
    }
    assert_eq!(f.counting.lookups.load(Ordering::SeqCst) - before, 1);
    // A second on, one lookup tries the store again.
    f.clock.advance(Duration::from_secs(1));
    assert!(cache
        .lookup(&f.known, f.clock.now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(f.counting.lookups.load(Ordering::SeqCst) - before, 2);
    drop(held);
}

#[tokio::test]
async fn keys_made_or_rotated_through_the_cache_are_known_to_it_at_once() {
    let clock = ManualClock::new(T0);
    let cache = CachedKeyStore::new(MemoryKeyStore::new());
    let keys = Profile::nouvel()
        .clock(clock.clone())
        .key_manager(cache.clone());
    let account = keys.create_account("Acme", nouvel::SCALE).await.unwrap();
    assert_eq!(cache.refuse_made_up_keys().await.unwrap(), Some(0));
    let now = clock.now();
    // The once-a-second check is spent on a made-up key: from now on only known ones pass.
    assert!(cache
        .lookup(&ApiKey::generate().digest(), now)
        .await
        .unwrap()
        .is_none());
    let made = keys
        .create_key(&account.id, KeySpec::new("k", [nouvel::GENERATE]))
        .await
        .unwrap();
    assert!(cache
        .lookup(&cache.digest(&made.key), now)
        .await
        .unwrap()
        .is_some());
    let rotated = keys
        .rotate_key(&account.id, &made.info.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(cache
        .lookup(&cache.digest(&rotated.key), now)
        .await
        .unwrap()
        .is_some());
    assert_eq!(cache.live_keys(), Some(2));
}
