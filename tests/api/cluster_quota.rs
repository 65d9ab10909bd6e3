//! The quota's Lua script against a real `redis-server`: the minute and hour limits, cool-downs,
//! and each replica's share of the limit while Redis is down.

use crate::cluster::{options, RedisServer, Replicas};
use scoregate::cluster::quota::{Charged, RedisQuotaStore};
use scoregate::cluster::{Cluster, ClusterConfig};
use scoregate::emulator::EmulatorOptions;
use scoregate::metrics::ClusterMetrics;
use scoregate::quota::QuotaKey;
use scoregate::tenants::{QuotaLimits, TenantId};
use scoregate::upstream::UpstreamService;
use std::sync::Arc;
use std::time::Duration;

/// A [`Cluster`] on `redis` with a fresh key prefix, for the script's own tests.
fn cluster(redis: &RedisServer, prefix: &str) -> Arc<Cluster> {
    let config = ClusterConfig {
        url: secrecy::SecretString::from(redis.url()),
        replicas: 3,
        key_prefix: prefix.to_owned(),
        command_timeout: Duration::from_millis(500),
        local_ttl: Duration::from_millis(100),
        wait_poll: Duration::from_millis(10),
    };
    Cluster::connect(
        &config,
        ClusterMetrics::default(),
        tokio::runtime::Handle::current(),
    )
    .expect("a valid URL")
}

fn quota_key(tenant: &str) -> QuotaKey {
    QuotaKey {
        tenant: TenantId::parse(tenant).expect("a valid id"),
        service: UpstreamService::Defender,
    }
}

/// Moves every call recorded in `key` back by `by` (as if that much time had passed).
async fn age(redis: &RedisServer, key: &str, by: Duration) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut connection)
        .await
        .unwrap();
    for (member, score) in members {
        let older = score - by.as_micros() as f64;
        let _: i64 = redis::cmd("ZADD")
            .arg(key)
            .arg(older)
            .arg(member)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_quota_script_admits_the_minute_limit_then_refuses_until_the_oldest_call_leaves() {
    let redis = RedisServer::start();
    let store = RedisQuotaStore::new(cluster(&redis, "lua1"));
    let contoso = quota_key("contoso");
    let limits = QuotaLimits {
        per_minute: 3,
        per_hour: 100,
    };
    for _ in 0..3 {
        assert_eq!(
            store.charge_shared(&contoso, limits).await.unwrap(),
            Charged::Ok
        );
    }
    let Charged::Full(wait) = store.charge_shared(&contoso, limits).await.unwrap() else {
        panic!("the fourth call in a minute is refused");
    };
    assert!(
        wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // A refused call is recorded in neither window.
    let minute = "lua1:{contoso}:quota:defender:m";
    let hour = "lua1:{contoso}:quota:defender:h";
    assert_eq!(calls_in(&redis, minute).await, 3);
    assert_eq!(calls_in(&redis, hour).await, 3);
    // 59 s later the calls are still in the sliding minute; 61 s later they have left it.
    age(&redis, minute, Duration::from_secs(59)).await;
    assert!(
        matches!(store.charge_shared(&contoso, limits).await.unwrap(), Charged::Full(w) if w <= Duration::from_secs(1))
    );
    age(&redis, minute, Duration::from_secs(2)).await;
    assert_eq!(
        store.charge_shared(&contoso, limits).await.unwrap(),
        Charged::Ok
    );
    // Another tenant's windows are its own.
    assert_eq!(
        store
            .charge_shared(&quota_key("fabrikam"), limits)
            .await
            .unwrap(),
        Charged::Ok
    );
    assert_eq!(calls_in(&redis, hour).await, 4);
}

/// The calls recorded in a window's sorted set.
async fn calls_in(redis: &RedisServer, key: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_quota_script_holds_the_hour_limit_and_honours_a_cool_down() {
    let redis = RedisServer::start();
    let store = RedisQuotaStore::new(cluster(&redis, "lua2"));
    let contoso = quota_key("contoso");
    let limits = QuotaLimits {
        per_minute: 100,
        per_hour: 2,
    };
    for _ in 0..2 {
        assert_eq!(
            store.charge_shared(&contoso, limits).await.unwrap(),
            Charged::Ok
        );
    }
    let Charged::Full(wait) = store.charge_shared(&contoso, limits).await.unwrap() else {
        panic!("the third call in an hour is refused");
    };
    assert!(wait > Duration::from_secs(3590), "{wait:?}");
    // Both windows or neither: the minute window did not record the refused call.
    age(
        &redis,
        "lua2:{contoso}:quota:defender:h",
        Duration::from_secs(3601),
    )
    .await;
    let fabrikam = quota_key("fabrikam");
    use scoregate::quota::QuotaStore as _;
    store.cool_down(&fabrikam, Duration::from_secs(30)).await;
    let Charged::CoolingDown(left) = store.charge_shared(&fabrikam, limits).await.unwrap() else {
        panic!("a tenant cooling down is refused");
    };
    assert!(left > Duration::from_secs(29), "{left:?}");
    // The minute window of contoso holds its two calls; the third is admitted now the hour
    // window has emptied.
    assert_eq!(
        store.charge_shared(&contoso, limits).await.unwrap(),
        Charged::Ok
    );
}

#[tokio::test]
async fn with_redis_down_each_replica_takes_its_share_of_the_limit() {
    let mut redis = RedisServer::start();
    let emulator = EmulatorOptions {
        quota_per_minute: Some(9),
        ..options(1)
    };
    let replicas = Replicas::start(
        3,
        emulator,
        &redis,
        &[
            ("SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE", "9"),
            ("SCOREGATE__CLUSTER__LOCAL_TTL_MS", "0"),
        ],
    )
    .await;
    redis.stop();
    // The first look-ups notice the outage; every replica then charges its own 9 / 3.
    for index in 0..3 {
        let _ = replicas.get(index, "/tenants/contoso/score").await;
    }
    replicas.wait_until_redis_is(0).await;
    for _ in 0..8 {
        let wave = (0..6).map(|i| {
            let replicas = &replicas;
            async move {
                replicas
                    .get(i % 3, "/tenants/contoso/score?max_age=0")
                    .await
            }
        });
        for (status, body) in futures::future::join_all(wave).await {
            assert!(
                status == 200 || (status == 503 && body["code"] == "upstream_throttled"),
                "{status} {body}"
            );
        }
    }
    let stats = replicas.emulator.stats().tenant("contoso");
    assert_eq!(stats.responses_429, 0, "the emulator never had to refuse");
    // Each replica calls on its own (no shared single flight now), within its third: at most 3
    // calls in its sliding minute.
    assert!(stats.score_calls <= 9, "{} calls", stats.score_calls);
    assert!(stats.score_calls >= 3, "{} calls", stats.score_calls);
}
