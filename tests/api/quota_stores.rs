//! One suite of cases for both quota stores: the in-process [`LocalQuotaStore`] (on tokio's
//! paused clock) and the shared [`RedisQuotaStore`] (against a real `redis-server`, on Redis
//! server time) count the minute and hour windows the same way, hold cool-downs and count
//! failures alike. Every case runs twice, as `quota_stores::local::<case>` and
//! `quota_stores::redis::<case>`.
//!
//! Time passes differently for the two: the local rig advances tokio's clock, the Redis rig moves
//! every recorded call back (the script reads Redis's own clock, which a test cannot stop). So a
//! case only lets time pass for the windows, and allows the Redis rig the few milliseconds real
//! time adds between two commands.

use crate::cluster::RedisServer;
use scoregate::cluster::quota::RedisQuotaStore;
use scoregate::cluster::{Cluster, ClusterConfig};
use scoregate::metrics::ClusterMetrics;
use scoregate::model::{Metric, ScoreKey};
use scoregate::quota::{FailureBackoff, LocalQuotaStore, QuotaKey, QuotaStore};
use scoregate::tenants::{QuotaLimits, TenantId};
use scoregate::upstream::UpstreamService;
use std::time::Duration;

/// What the Redis rig's clock may add between two commands.
const SLACK: Duration = Duration::from_secs(1);

/// A store, and the means to let time pass for its windows.
enum Rig {
    Local(LocalQuotaStore),
    Redis {
        store: RedisQuotaStore,
        redis: RedisServer,
        metrics: ClusterMetrics,
    },
}

/// The key prefix of the Redis rig.
const PREFIX: &str = "stores";

impl Rig {
    fn local() -> Self {
        Self::Local(LocalQuotaStore::default())
    }

    fn redis() -> Self {
        let redis = RedisServer::start();
        let metrics = ClusterMetrics::default();
        let config = ClusterConfig {
            url: secrecy::SecretString::from(redis.url()),
            replicas: 3,
            key_prefix: PREFIX.to_owned(),
            command_timeout: Duration::from_millis(500),
            local_ttl: Duration::from_millis(100),
            wait_poll: Duration::from_millis(10),
        };
        let cluster = Cluster::connect(&config, metrics.clone(), tokio::runtime::Handle::current())
            .expect("a valid URL");
        Self::Redis {
            store: RedisQuotaStore::new(cluster),
            redis,
            metrics,
        }
    }

    fn store(&self) -> &dyn QuotaStore {
        match self {
            Self::Local(store) => store,
            Self::Redis { store, .. } => store,
        }
    }

    /// Lets `by` pass for every call recorded so far.
    async fn age(&self, by: Duration) {
        match self {
            Self::Local(_) => tokio::time::advance(by).await,
            Self::Redis { redis, .. } => age_calls(redis, by).await,
        }
    }

    /// Fails a Redis case that ran on the local fallback instead of Redis.
    fn assert_shared(&self) {
        if let Self::Redis { metrics, .. } = self {
            assert_eq!(metrics.redis_up.get(), 1, "Redis answered throughout");
        }
    }
}

/// Moves every call in every window of the Redis rig back by `by`.
async fn age_calls(redis: &RedisServer, by: Duration) {
    let client = ::redis::Client::open(redis.url()).expect("a valid URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let windows: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{PREFIX}:*:quota:*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    for window in windows {
        let calls: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
            .arg(&window)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .expect("ZRANGE");
        for (member, at) in calls {
            let _: i64 = ::redis::cmd("ZADD")
                .arg(&window)
                .arg(at - by.as_micros() as f64)
                .arg(member)
                .query_async(&mut connection)
                .await
                .expect("ZADD");
        }
    }
}

fn key(tenant: &str, service: UpstreamService) -> QuotaKey {
    QuotaKey {
        tenant: TenantId::parse(tenant).expect("a valid id"),
        service,
    }
}

fn defender(tenant: &str) -> QuotaKey {
    key(tenant, UpstreamService::Defender)
}

fn limits(per_minute: u32, per_hour: u32) -> QuotaLimits {
    QuotaLimits {
        per_minute,
        per_hour,
    }
}

/// Charges until a call is refused: the calls admitted and the wait asked for.
async fn drain(rig: &Rig, key: &QuotaKey, limits: QuotaLimits) -> (u32, Duration) {
    let mut admitted = 0;
    loop {
        match rig.store().charge(key, limits).await {
            Ok(()) => admitted += 1,
            Err(wait) => return (admitted, wait),
        }
    }
}

/// `wait` is `expected`, give or take what real time adds in Redis.
fn assert_about(wait: Duration, expected: Duration) {
    assert!(
        wait <= expected && wait + SLACK > expected,
        "waited {wait:?}, expected {expected:?}"
    );
}

async fn the_minute_limit_is_admitted_then_refused_until_the_oldest_call_leaves(rig: Rig) {
    let contoso = defender("contoso");
    let three = limits(3, 100);
    let (admitted, wait) = drain(&rig, &contoso, three).await;
    assert_eq!(admitted, 3);
    assert_about(wait, Duration::from_secs(60));
    // 59 s on, the calls are still inside the sliding minute; 60 s on, they have left it.
    rig.age(Duration::from_secs(59)).await;
    let Err(wait) = rig.store().charge(&contoso, three).await else {
        panic!("not a moment early");
    };
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    rig.age(Duration::from_secs(1)).await;
    assert_eq!(drain(&rig, &contoso, three).await.0, 3);
    // Another tenant's windows, and the same tenant's Graph windows, are their own.
    assert_eq!(drain(&rig, &defender("fabrikam"), three).await.0, 3);
    let graph = key("contoso", UpstreamService::Graph);
    assert_eq!(drain(&rig, &graph, three).await.0, 3);
    rig.assert_shared();
}

async fn a_call_refused_by_one_window_is_charged_to_neither(rig: Rig) {
    // Refused by the minute: the hour does not count it.
    let contoso = defender("contoso");
    assert_eq!(drain(&rig, &contoso, limits(2, 3)).await.0, 2);
    rig.age(Duration::from_secs(61)).await;
    let (admitted, wait) = drain(&rig, &contoso, limits(2, 3)).await;
    assert_eq!(
        admitted, 1,
        "the hour holds the two calls admitted, not the refused one"
    );
    assert_about(wait, Duration::from_secs(3600 - 61));
    // Refused by the hour: the minute does not count it.
    let fabrikam = defender("fabrikam");
    assert_eq!(drain(&rig, &fabrikam, limits(2, 1)).await.0, 1);
    let (admitted, wait) = drain(&rig, &fabrikam, limits(2, 10)).await;
    assert_eq!(
        admitted, 1,
        "the minute holds one call, not the refused one"
    );
    assert_about(wait, Duration::from_secs(60));
    rig.assert_shared();
}

async fn the_hour_limit_holds_over_an_hour_of_minutes(rig: Rig) {
    let contoso = defender("contoso");
    let five = limits(100, 5);
    let mut admitted = 0;
    for _ in 0..6 {
        for _ in 0..2 {
            admitted += u32::from(rig.store().charge(&contoso, five).await.is_ok());
        }
        rig.age(Duration::from_secs(600)).await;
    }
    assert_eq!(admitted, 5, "five calls in the first hour");
    // An hour after the first two calls, they have left the window.
    assert_eq!(drain(&rig, &contoso, five).await.0, 2);
    rig.assert_shared();
}

async fn limits_that_change_apply_to_the_calls_already_made(rig: Rig) {
    let contoso = defender("contoso");
    for _ in 0..3 {
        assert_eq!(rig.store().charge(&contoso, limits(5, 100)).await, Ok(()));
    }
    assert!(rig.store().charge(&contoso, limits(3, 100)).await.is_err());
    assert_eq!(drain(&rig, &contoso, limits(4, 100)).await.0, 1);
    rig.assert_shared();
}

async fn a_key_cooling_down_is_refused_for_the_rest_of_its_cool_down(rig: Rig) {
    let contoso = defender("contoso");
    rig.store()
        .cool_down(&contoso, Duration::from_secs(30))
        .await;
    rig.store()
        .cool_down(&contoso, Duration::from_secs(10))
        .await;
    let left = rig
        .store()
        .cool_down_left(&contoso)
        .await
        .expect("cooling down");
    assert_about(left, Duration::from_secs(30));
    let Err(wait) = rig.store().charge(&contoso, limits(100, 1500)).await else {
        panic!("a key cooling down is refused");
    };
    assert_about(wait, Duration::from_secs(30));
    // The tenant's other service, and other tenants, are not cooling down.
    assert_eq!(
        rig.store()
            .charge(&key("contoso", UpstreamService::Graph), limits(100, 1500))
            .await,
        Ok(())
    );
    assert_eq!(
        rig.store().cool_down_left(&defender("fabrikam")).await,
        None
    );
    rig.assert_shared();
}

async fn failures_in_a_row_back_off_exponentially_and_a_success_ends_it(rig: Rig) {
    let backoff = FailureBackoff {
        base: Duration::from_secs(5),
        max: Duration::from_secs(40),
    };
    let contoso = ScoreKey {
        tenant: TenantId::parse("contoso").expect("a valid id"),
        metric: Metric::Device,
    };
    for (failures, pause) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 40)] {
        assert_eq!(
            rig.store().record_failure(&contoso, &backoff).await,
            failures
        );
        let left = rig
            .store()
            .backoff_left(&contoso)
            .await
            .expect("backing off");
        assert_about(left, Duration::from_secs(pause));
    }
    assert_eq!(rig.store().consecutive_failures(&contoso).await, 5);
    let exposure = ScoreKey {
        metric: Metric::Exposure,
        ..contoso.clone()
    };
    assert_eq!(
        rig.store().backoff_left(&exposure).await,
        None,
        "per metric"
    );
    rig.store().record_success(&contoso).await;
    assert_eq!(rig.store().consecutive_failures(&contoso).await, 0);
    assert_eq!(rig.store().backoff_left(&contoso).await, None);
    rig.assert_shared();
}

/// Each case once per store.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(super::Rig::local()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Rig::redis()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    the_minute_limit_is_admitted_then_refused_until_the_oldest_call_leaves,
    a_call_refused_by_one_window_is_charged_to_neither,
    the_hour_limit_holds_over_an_hour_of_minutes,
    limits_that_change_apply_to_the_calls_already_made,
    a_key_cooling_down_is_refused_for_the_rest_of_its_cool_down,
    failures_in_a_row_back_off_exponentially_and_a_success_ends_it,
);
