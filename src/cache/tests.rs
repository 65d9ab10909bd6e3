//! The cache's windows and loaders under tokio's paused clock, over a scripted source.

use super::*;
use crate::policy::testing::{outbound, tenant, Answer, FakeSource, DEFENDER_LIMITS};

const FRESH: Duration = Duration::from_secs(60);
const STALE_IF_ERROR: Duration = Duration::from_secs(300);

fn cache(source: &Arc<FakeSource>) -> ScoreCache {
    let settings = CacheSettings {
        fresh_seconds: FRESH.as_secs(),
        stale_if_error_seconds: STALE_IF_ERROR.as_secs(),
        max_entries: 1000,
        min_forced_interval_ms: 1000,
    };
    ScoreCache::new(
        &settings,
        outbound(source.clone(), Arc::default(), 8),
        Arc::default(),
        tokio::runtime::Handle::current(),
    )
}

/// The usual setup: a source answering 42 after `latency`, a cache over it, and the tenant
/// `contoso` with Defender's limits.
fn rig(latency: Duration) -> (Arc<FakeSource>, ScoreCache, Arc<Tenant>) {
    let source = FakeSource::new(42.0, latency);
    let cache = cache(&source);
    (source, cache, tenant("contoso", DEFENDER_LIMITS))
}

/// `contoso`'s device score, as a plain request (no `max_age`) with time to wait.
async fn device(cache: &ScoreCache, contoso: &Arc<Tenant>) -> Result<Served, ScoreError> {
    cache.get(contoso, Metric::Device, None, soon()).await
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn server_error() -> Answer {
    Answer::status(503, None, "Defender answered 503")
}

/// Lets spawned fetches run to their end (the paused clock jumps over their latency).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_fresh_entry_is_served_from_the_cache_and_an_expired_one_stale_while_it_refreshes() {
    let (source, cache, contoso) = rig(Duration::from_millis(20));
    let first = device(&cache, &contoso).await.unwrap();
    assert_eq!(
        (first.source, first.reading().score),
        (Source::Upstream, 42.0)
    );
    let fresh_for = first.fresh_for;
    assert!(fresh_for <= FRESH && fresh_for >= FRESH.mul_f64(1.0 - FRESH_JITTER));

    tokio::time::advance(fresh_for - Duration::from_millis(1)).await;
    let cached = device(&cache, &contoso).await.unwrap();
    assert_eq!(cached.source, Source::Cache);
    assert_eq!(cached.fresh_for, Duration::from_millis(1));
    assert_eq!(source.calls("contoso"), 1);

    tokio::time::advance(Duration::from_millis(1)).await;
    source.answer(Answer::Score(43.0));
    let stale = device(&cache, &contoso).await.unwrap();
    assert_eq!((stale.source, stale.reading().score), (Source::Stale, 42.0));
    assert!(stale.warning.is_none());
    assert!(
        cache.is_fetching(&contoso.id, Metric::Device).await,
        "a refresh runs behind the caller"
    );
    settle().await;
    let refreshed = device(&cache, &contoso).await.unwrap();
    assert_eq!(
        (refreshed.source, refreshed.reading().score),
        (Source::Cache, 43.0)
    );
    assert_eq!(source.calls("contoso"), 2);
}

#[tokio::test(start_paused = true)]
async fn past_the_stale_window_the_caller_waits_for_a_new_value() {
    let (source, cache, contoso) = rig(Duration::from_millis(20));
    device(&cache, &contoso).await.unwrap();
    tokio::time::advance(FRESH + STALE_IF_ERROR + Duration::from_secs(1)).await;
    source.answer(Answer::Score(50.0));
    let served = device(&cache, &contoso).await.unwrap();
    assert_eq!(
        (served.source, served.reading().score),
        (Source::Upstream, 50.0)
    );
}

#[tokio::test(start_paused = true)]
async fn fresh_windows_are_jittered_so_that_tenants_loaded_together_expire_apart() {
    let source = FakeSource::new(42.0, Duration::ZERO);
    let cache = cache(&source);
    let mut windows = Vec::new();
    for i in 0..20 {
        let tenant = tenant(&format!("tenant-{i}"), DEFENDER_LIMITS);
        windows.push(
            cache
                .get(&tenant, Metric::Device, None, soon())
                .await
                .unwrap()
                .fresh_for,
        );
    }
    let shortest = FRESH.mul_f64(1.0 - FRESH_JITTER);
    assert!(
        windows.iter().all(|w| *w <= FRESH && *w >= shortest),
        "{windows:?}"
    );
    let mut distinct = windows.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 15,
        "without jitter they expire together: {windows:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_of_a_cold_tenant_share_one_fetch() {
    let (source, cache, contoso) = rig(Duration::from_millis(200));
    let callers = (0..10).map(|_| cache.get(&contoso, Metric::Device, None, soon()));
    let served = futures::future::join_all(callers).await;
    assert!(served.iter().all(|s| matches!(
        s,
        Ok(Served {
            source: Source::Upstream,
            ..
        })
    )));
    assert_eq!(source.calls("contoso"), 1);
    assert!(!cache.is_fetching(&contoso.id, Metric::Device).await);
}

#[tokio::test(start_paused = true)]
async fn a_caller_whose_deadline_passes_leaves_the_fetch_to_fill_the_cache() {
    let (source, cache, contoso) = rig(Duration::from_secs(2));
    let hurried = cache
        .get(
            &contoso,
            Metric::Device,
            None,
            Instant::now() + Duration::from_secs(1),
        )
        .await;
    assert!(matches!(hurried, Err(ScoreError::Deadline)));
    settle().await;
    settle().await;
    let served = device(&cache, &contoso).await.unwrap();
    assert_eq!(served.source, Source::Cache);
    assert_eq!(source.calls("contoso"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_last_good_value_covers_a_failure_within_the_stale_if_error_window() {
    let (source, cache, contoso) = rig(Duration::from_millis(20));
    device(&cache, &contoso).await.unwrap();
    tokio::time::advance(FRESH).await;
    source.answer(server_error());
    // Stale at once; the refresh behind it fails (after its retries).
    let stale = device(&cache, &contoso).await.unwrap();
    assert_eq!(stale.source, Source::Stale);
    settle().await;
    assert!(cache
        .last_fetch(&contoso.id, Metric::Device)
        .unwrap()
        .error
        .is_some());
    let covered = device(&cache, &contoso).await.unwrap();
    assert_eq!(
        (covered.source, covered.reading().score),
        (Source::Stale, 42.0)
    );
    assert_eq!(
        covered.warning.map(|w| w.code().as_str()),
        Some("upstream_error"),
        "the stale value says why it is stale"
    );
    // A caller who asks for a younger value gets the failure instead.
    let strict = cache
        .get(
            &contoso,
            Metric::Device,
            Some(Duration::from_secs(10)),
            soon(),
        )
        .await;
    assert!(matches!(
        strict,
        Err(ScoreError::Upstream(UpstreamError::Failed { .. }))
    ));
    // Past the stale-if-error window, nothing covers the failure.
    tokio::time::advance(STALE_IF_ERROR).await;
    let expired = device(&cache, &contoso).await;
    assert!(
        matches!(expired, Err(ScoreError::Upstream(_))),
        "{expired:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_tenant_in_back_off_is_not_called_and_answers_its_last_failure() {
    let source = FakeSource::new(42.0, Duration::ZERO);
    source.answer(server_error());
    let cache = cache(&source);
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    assert!(device(&cache, &contoso).await.is_err());
    let calls = source.calls("contoso");
    let again = device(&cache, &contoso).await;
    assert!(
        matches!(again, Err(ScoreError::Upstream(UpstreamError::Failed { ref detail, .. })) if detail == "Defender answered 503")
    );
    cache
        .refresh(&contoso, Metric::Device, Priority::Interactive)
        .await;
    assert!(
        !cache.is_fetching(&contoso.id, Metric::Device).await,
        "the refresher skips it too"
    );
    assert_eq!(source.calls("contoso"), calls);
}

#[tokio::test(start_paused = true)]
async fn max_age_zero_forces_a_fetch_but_not_more_than_once_per_minimum_interval() {
    let (source, cache, contoso) = rig(Duration::ZERO);
    device(&cache, &contoso).await.unwrap();
    let again = cache
        .get(&contoso, Metric::Device, Some(Duration::ZERO), soon())
        .await
        .unwrap();
    assert_eq!((again.source, source.calls("contoso")), (Source::Cache, 1));
    tokio::time::advance(Duration::from_millis(1001)).await;
    let forced = cache
        .get(&contoso, Metric::Device, Some(Duration::ZERO), soon())
        .await
        .unwrap();
    assert_eq!(
        (forced.source, source.calls("contoso")),
        (Source::Upstream, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn get_fresh_now_gives_only_what_get_would_serve_from_the_cache_and_never_fetches() {
    let (source, cache, contoso) = rig(Duration::from_millis(20));
    let fresh_now =
        |max_age| cache.get_fresh_now(&contoso, Metric::Device, max_age, Instant::now());
    assert!(fresh_now(None).is_none(), "cold: left to get");
    device(&cache, &contoso).await.unwrap();
    let served = fresh_now(None).expect("fresh");
    assert_eq!(
        (served.source, served.reading().score),
        (Source::Cache, 42.0)
    );

    // Two seconds old: past the one-second floor of forced fetches.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(fresh_now(Some(Duration::ZERO)).is_none(), "forced");
    assert!(fresh_now(Some(Duration::from_secs(10))).is_some());
    assert!(
        cache
            .get_fresh_now(&contoso, Metric::Secure, None, Instant::now())
            .is_none(),
        "a metric the tenant lacks is get's error to give"
    );
    tokio::time::advance(FRESH).await;
    assert!(fresh_now(None).is_none(), "expired: get serves it stale");
    assert_eq!(source.calls("contoso"), 1);
}

/// What a cache reported to its observer, in order.
#[derive(Default)]
struct Observed {
    readings: Mutex<Vec<(TenantId, Metric, f64)>>,
    failures: Mutex<Vec<(TenantId, Metric)>>,
}

impl ReadingObserver for Observed {
    fn on_reading(&self, tenant: &Arc<Tenant>, metric: Metric, reading: &Reading) {
        self.readings
            .lock()
            .push((tenant.id.clone(), metric, reading.score));
    }

    fn on_failure(&self, tenant: &Tenant, metric: Metric) {
        self.failures.lock().push((tenant.id.clone(), metric));
    }
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_of_every_fetch_once_and_of_no_cache_hit() {
    let source = FakeSource::new(42.0, Duration::from_millis(20));
    let observed = Arc::new(Observed::default());
    let cache = cache(&source).with_observer(observed.clone());
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    device(&cache, &contoso).await.unwrap();
    let hit = device(&cache, &contoso).await.unwrap();
    assert_eq!(hit.source, Source::Cache);
    settle().await;
    assert_eq!(
        *observed.readings.lock(),
        vec![(contoso.id.clone(), Metric::Device, 42.0)]
    );
    assert!(observed.failures.lock().is_empty());

    // A failed fetch (after its retries) is one failure, and no reading.
    let fabrikam = tenant("fabrikam", DEFENDER_LIMITS);
    source.script("fabrikam", std::iter::repeat_n(server_error(), 10));
    assert!(device(&cache, &fabrikam).await.is_err());
    settle().await;
    assert_eq!(
        *observed.failures.lock(),
        vec![(fabrikam.id.clone(), Metric::Device)]
    );
    assert_eq!(observed.readings.lock().len(), 1);
}

/// A cache over a quota store that counts the gate's look-ups.
fn counting_rig() -> (
    Arc<FakeSource>,
    ScoreCache,
    Arc<Tenant>,
    Arc<crate::policy::testing::CountingQuotaStore>,
) {
    let source = FakeSource::new(42.0, Duration::from_millis(20));
    let store = Arc::new(crate::policy::testing::CountingQuotaStore::default());
    let settings = CacheSettings {
        fresh_seconds: FRESH.as_secs(),
        stale_if_error_seconds: STALE_IF_ERROR.as_secs(),
        max_entries: 1000,
        min_forced_interval_ms: 1000,
    };
    let cache = ScoreCache::new(
        &settings,
        crate::policy::testing::outbound_with_store(
            vec![source.clone()],
            Arc::default(),
            8,
            store.clone(),
        ),
        Arc::default(),
        tokio::runtime::Handle::current(),
    );
    (source, cache, tenant("contoso", DEFENDER_LIMITS), store)
}

#[tokio::test(start_paused = true)]
async fn a_cold_fetch_and_a_refresh_each_ask_the_gate_once() {
    let (source, cache, contoso, store) = counting_rig();
    let first = device(&cache, &contoso).await.unwrap();
    assert_eq!(first.source, Source::Upstream);
    assert_eq!(source.calls("contoso"), 1);
    assert_eq!(store.gate_evaluations(), 1, "one gate per cold fetch");
    assert_eq!(
        store
            .backoff_lookups
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Stale-while-revalidate: one refresh, one gate.
    tokio::time::advance(FRESH).await;
    let stale = device(&cache, &contoso).await.unwrap();
    assert_eq!(stale.source, Source::Stale);
    // A stale answer while that refresh runs starts nothing, and asks no gate.
    assert!(cache.is_fetching(&contoso.id, Metric::Device).await);
    let again = device(&cache, &contoso).await.unwrap();
    assert_eq!(again.source, Source::Stale);
    assert_eq!(store.gate_evaluations(), 2);
    settle().await;
    assert_eq!(source.calls("contoso"), 2);
    assert_eq!(store.gate_evaluations(), 2);
    // The refresher's refresh: one gate too.
    cache
        .refresh(&contoso, Metric::Device, Priority::Background)
        .await;
    settle().await;
    assert_eq!(source.calls("contoso"), 3);
    assert_eq!(store.gate_evaluations(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_gated_tenant_is_asked_once_and_holds_no_flight() {
    let (source, cache, contoso, store) = counting_rig();
    source.answer(Answer::status(429, Some(Duration::from_secs(30)), "busy"));
    assert!(device(&cache, &contoso).await.is_err());
    let before = store.gate_evaluations();
    let again = device(&cache, &contoso).await;
    assert!(
        matches!(
            again,
            Err(ScoreError::Upstream(UpstreamError::Throttled { .. }))
        ),
        "{again:?}"
    );
    assert_eq!(store.gate_evaluations(), before + 1);
    assert!(
        !cache.is_fetching(&contoso.id, Metric::Device).await,
        "no single-flight slot for a tenant in cool-down"
    );
    assert_eq!(source.calls("contoso"), 1);
}

#[tokio::test(start_paused = true)]
async fn background_refreshes_start_only_while_more_than_half_the_slots_are_free() {
    let source = FakeSource::new(42.0, Duration::from_secs(5));
    let settings = CacheSettings {
        fresh_seconds: FRESH.as_secs(),
        stale_if_error_seconds: STALE_IF_ERROR.as_secs(),
        max_entries: 1000,
        min_forced_interval_ms: 1000,
    };
    let cache = ScoreCache::new(
        &settings,
        outbound(source.clone(), Arc::default(), 4),
        Arc::default(),
        tokio::runtime::Handle::current(),
    );
    assert!(cache.admits(Priority::Background));
    // Two callers' fetches hold two of the four slots: no more than half are free.
    let tenants: Vec<_> = ["contoso", "fabrikam"]
        .iter()
        .map(|id| tenant(id, DEFENDER_LIMITS))
        .collect();
    for tenant in &tenants {
        cache
            .refresh(tenant, Metric::Device, Priority::Interactive)
            .await;
    }
    while cache.outbound().in_flight_cap().in_flight() < 2 {
        tokio::task::yield_now().await;
    }
    assert!(!cache.admits(Priority::Background));
    assert!(cache.admits(Priority::Interactive));
    let northwind = tenant("northwind", DEFENDER_LIMITS);
    cache
        .refresh(&northwind, Metric::Device, Priority::Background)
        .await;
    assert!(!cache.is_fetching(&northwind.id, Metric::Device).await);
    cache
        .refresh(&northwind, Metric::Device, Priority::Interactive)
        .await;
    assert!(cache.is_fetching(&northwind.id, Metric::Device).await);
}

#[tokio::test(start_paused = true)]
async fn the_local_store_drops_entries_past_their_time_to_live_and_the_oldest_at_capacity() {
    let store = LocalStore::new(2, Duration::from_secs(60));
    let key = |tenant: &str| ScoreKey {
        tenant: crate::model::TenantId::parse(tenant).unwrap(),
        metric: Metric::Device,
    };
    let entry = |score: f64| {
        Arc::new(Entry::new(
            Reading {
                score,
                time: "t".to_owned(),
                fetched_at: std::time::SystemTime::UNIX_EPOCH,
                secure: None,
            },
            Instant::now(),
            Duration::from_secs(30),
        ))
    };
    store.put(key("a"), entry(1.0));
    tokio::time::advance(Duration::from_secs(10)).await;
    store.put(key("b"), entry(2.0));
    assert_eq!(
        store
            .get_now(&key("a"), Instant::now())
            .map(|e| e.reading.score),
        Some(1.0)
    );
    // Full: a third key drops the oldest stored (`a`), not a newer one.
    store.put(key("c"), entry(3.0));
    assert!(store.get(&key("a")).await.is_none());
    assert_eq!(
        store.get(&key("b")).await.map(|e| e.reading.score),
        Some(2.0)
    );
    // Replacing a key at capacity drops nothing.
    store.put(key("b"), entry(4.0));
    assert_eq!(
        store.get(&key("c")).await.map(|e| e.reading.score),
        Some(3.0)
    );
    // Past its time to live an entry is gone.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(store.get_now(&key("b"), Instant::now()).is_none());
    assert!(store.get(&key("c")).await.is_none());
}
