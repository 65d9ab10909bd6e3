//! The per-tenant upstream quota, 429 cool-downs and failure back-off in Redis, shared by every
//! replica, behind [`QuotaStore`].
//!
//! The quota is one Lua script ([`CHARGE`]) running the rule every quota store follows (see
//! [`crate::quota`], "How the windows count"), under Redis server time (`TIME`, so that
//! replicas' clocks never disagree): it drops the calls that left the minute and hour windows,
//! refuses when either holds its limit (or the tenant is cooling down) and otherwise records the
//! call in both at once. Each window is a sorted set of call times: a sliding log, exact in every
//! sliding window, at most `limit` entries per tenant and service; the spans come from
//! [`Window::span`]. The keys of one script carry the
//! tenant as hash tag, so they share a Redis Cluster slot.
//!
//! While Redis is unavailable every call goes to a [`LocalQuotaStore`] at this replica's share of
//! the limits ([`ReplicaShareWhenRedisDown`]: the configured ones divided by `[cluster]
//! replicas`): replicas that cannot coordinate still stay
//! within Microsoft's limits together. Cool-downs are mirrored locally too, so that a replica
//! that loses Redis still honours a 429 it learnt of.

use super::Cluster;
use crate::metrics::ClusterUse;
use crate::model::{Metric, ScoreKey};
use crate::quota::{
    FailureBackoff, LocalQuotaStore, QuotaKey, QuotaStore, ReplicaShareWhenRedisDown, Window,
};
use crate::tenants::{QuotaLimits, Registry};
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Charges one call to a tenant's minute (`KEYS[1]`) and hour (`KEYS[2]`) windows unless one is
/// full or the cool-down key (`KEYS[3]`) is set. `ARGV`: minute limit, hour limit, a unique
/// member, minute span and hour span in µs ([`Window::span`]). Returns `{0, 0}` when charged, `{1, wait_ms}` when a window is full (nothing is
/// charged), `{2, wait_ms}` in a cool-down.
pub const CHARGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cool = redis.call('PTTL', KEYS[3])
if cool > 0 then return {2, cool} end
local spans = {tonumber(ARGV[4]), tonumber(ARGV[5])}
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local wait = 0
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - spans[i])
  if redis.call('ZCARD', KEYS[i]) >= limits[i] then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + spans[i] - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return {1, math.ceil(wait / 1000)} end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[i], math.ceil(spans[i] / 1000))
end
return {0, 0}
";

/// Sets the cool-down `KEYS[1]` for `ARGV[1]` ms unless a longer one runs.
const COOL_DOWN: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
";

/// Records a failure in `KEYS[1]` (a hash: `n` failures in a row, `until` ms of server time);
/// `ARGV`: base and max pause in ms. Returns the failures in a row.
const FAIL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local pause = tonumber(ARGV[1]) * (2 ^ math.min(n - 1, 16))
if pause > tonumber(ARGV[2]) then pause = tonumber(ARGV[2]) end
redis.call('HSET', KEYS[1], 'until', now + pause)
redis.call('PEXPIRE', KEYS[1], 86400000)
return n
";

/// `{n, ms left of the pause}` of the failure hash `KEYS[1]` (`{0, 0}` without failures).
const BACKOFF: &str = r"
local state = redis.call('HMGET', KEYS[1], 'n', 'until')
if not state[1] then return {0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = tonumber(state[2] or 0) - now
if left < 0 then left = 0 end
return {tonumber(state[1]), left}
";

/// A window's span in µs, the unit of [`CHARGE`]'s clock.
fn span_micros(window: Window) -> u64 {
    u64::try_from(window.span().as_micros()).unwrap_or(u64::MAX)
}

/// Back-off keys deleted in one pipeline by a reload (one `DEL` each: every key is its own
/// tenant's, in its own Redis Cluster slot).
const RESTARTED_AT_ONCE: usize = 1_000;

static CHARGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CHARGE));
static COOL_DOWN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COOL_DOWN));
static FAIL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FAIL));
static BACKOFF_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BACKOFF));

/// What [`CHARGE`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charged {
    /// The call is recorded in both windows.
    Ok,
    /// A window is full for this long; nothing was charged.
    Full(Duration),
    /// The tenant cools down for this long; nothing was charged.
    CoolingDown(Duration),
}

/// The quota state of every replica, in Redis, with a local fallback.
pub struct RedisQuotaStore {
    cluster: Arc<Cluster>,
    /// Used while Redis is unavailable, at the limits divided by the replicas; holds mirrored
    /// cool-downs always.
    local: LocalQuotaStore,
}

impl RedisQuotaStore {
    /// A store over `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            local: LocalQuotaStore::default(),
        }
    }

    /// Runs [`CHARGE`] for `key` (public for the script's own tests).
    pub async fn charge_shared(
        &self,
        key: &QuotaKey,
        limits: QuotaLimits,
    ) -> Result<Charged, super::ClusterError> {
        let service = key.service.as_str();
        let minute = self
            .cluster
            .tenant_key(key.tenant.as_str(), &format!("quota:{service}:m"));
        let hour = self
            .cluster
            .tenant_key(key.tenant.as_str(), &format!("quota:{service}:h"));
        let cool = self.cool_key(key);
        let member = uuid::Uuid::new_v4().to_string();
        let (code, wait): (u8, u64) = self
            .cluster
            .run(|mut connection| async move {
                CHARGE_SCRIPT
                    .key(minute)
                    .key(hour)
                    .key(cool)
                    .arg(Window::Minute.limit(limits))
                    .arg(Window::Hour.limit(limits))
                    .arg(member)
                    .arg(span_micros(Window::Minute))
                    .arg(span_micros(Window::Hour))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let wait = Duration::from_millis(wait);
        Ok(match code {
            0 => Charged::Ok,
            2 => Charged::CoolingDown(wait),
            _ => Charged::Full(wait.max(Duration::from_millis(1))),
        })
    }

    fn cool_key(&self, key: &QuotaKey) -> String {
        self.cluster.tenant_key(
            key.tenant.as_str(),
            &format!("cool:{}", key.service.as_str()),
        )
    }

    /// This replica's share of `limits` while Redis is unavailable.
    fn local_share(&self, limits: QuotaLimits) -> QuotaLimits {
        ReplicaShareWhenRedisDown {
            replicas: self.cluster.replicas(),
        }
        .of(limits)
    }

    fn fell_back(&self) {
        self.cluster.fell_back(ClusterUse::Quota);
    }
}

#[async_trait::async_trait]
impl QuotaStore for RedisQuotaStore {
    async fn charge(&self, key: &QuotaKey, limits: QuotaLimits) -> Result<(), Duration> {
        match self.charge_shared(key, limits).await {
            Ok(Charged::Ok) => Ok(()),
            Ok(Charged::Full(wait)) => Err(wait),
            Ok(Charged::CoolingDown(wait)) => {
                self.local.cool_down(key, wait).await;
                Err(wait)
            }
            Err(_) => {
                self.fell_back();
                self.local.charge(key, self.local_share(limits)).await
            }
        }
    }

    async fn cool_down(&self, key: &QuotaKey, duration: Duration) {
        self.local.cool_down(key, duration).await;
        let cool = self.cool_key(key);
        // At least 1 ms: `PX 0` is an error, and a zero cool-down is none.
        let millis = u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, 86_400_000 * 365);
        let result = self
            .cluster
            .run(|mut connection| async move {
                COOL_DOWN_SCRIPT
                    .key(cool)
                    .arg(millis)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
        if result.is_err() {
            self.fell_back();
        }
    }

    async fn cool_down_left(&self, key: &QuotaKey) -> Option<Duration> {
        let cool = self.cool_key(key);
        let shared = self
            .cluster
            .run(|mut connection| async move {
                redis::cmd("PTTL")
                    .arg(cool)
                    .query_async::<i64>(&mut connection)
                    .await
            })
            .await;
        match shared {
            Ok(left) if left > 0 => {
                let left = Duration::from_millis(left.unsigned_abs());
                // Mirrored, so that this replica honours it should Redis go away.
                self.local.cool_down(key, left).await;
                Some(left)
            }
            Ok(_) => None,
            Err(_) => {
                self.fell_back();
                self.local.cool_down_left(key).await
            }
        }
    }

    fn cooling_down(&self) -> usize {
        self.local.cooling_down()
    }

    async fn record_failure(&self, key: &ScoreKey, backoff: &FailureBackoff) -> u32 {
        let local = self.local.record_failure(key, backoff).await;
        let failures = self.cluster.score_key(key, "fail");
        let base = u64::try_from(backoff.base.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(backoff.max.as_millis()).unwrap_or(u64::MAX);
        let shared = self
            .cluster
            .run(|mut connection| async move {
                FAIL_SCRIPT
                    .key(failures)
                    .arg(base)
                    .arg(max)
                    .invoke_async::<u32>(&mut connection)
                    .await
            })
            .await;
        shared.unwrap_or_else(|_| {
            self.fell_back();
            local
        })
    }

    async fn record_success(&self, key: &ScoreKey) {
        self.local.record_success(key).await;
        let failures = self.cluster.score_key(key, "fail");
        let result = self
            .cluster
            .run(|mut connection| async move {
                redis::cmd("DEL")
                    .arg(failures)
                    .query_async::<i64>(&mut connection)
                    .await
            })
            .await;
        if result.is_err() {
            self.fell_back();
        }
    }

    async fn backoff_left(&self, key: &ScoreKey) -> Option<Duration> {
        match self.backoff_state(key).await {
            Some((_, left)) => (left > 0).then(|| Duration::from_millis(left)),
            None => self.local.backoff_left(key).await,
        }
    }

    async fn consecutive_failures(&self, key: &ScoreKey) -> u32 {
        match self.backoff_state(key).await {
            Some((failures, _)) => failures,
            None => self.local.consecutive_failures(key).await,
        }
    }

    async fn retain(&self, registry: &Registry) {
        // Shared windows and cool-downs expire by themselves (within an hour); the failure
        // back-off is restarted in Redis too, as in one process: a reload is how a fixed
        // credential takes effect, whichever replica is asked next.
        self.local.retain(registry).await;
        let keys: Vec<String> = registry
            .all()
            .iter()
            .flat_map(|tenant| {
                Metric::ALL.into_iter().map(|metric| {
                    let key = ScoreKey {
                        tenant: tenant.id.clone(),
                        metric,
                    };
                    self.cluster.score_key(&key, "fail")
                })
            })
            .collect();
        for chunk in keys.chunks(RESTARTED_AT_ONCE) {
            let chunk = chunk.to_vec();
            let restarted = self
                .cluster
                .run(|mut connection| async move {
                    let mut pipeline = redis::pipe();
                    for key in chunk {
                        pipeline.del(key).ignore();
                    }
                    pipeline.query_async::<()>(&mut connection).await
                })
                .await;
            if restarted.is_err() {
                // The shared pauses end by themselves (at most the back-off's maximum).
                self.fell_back();
                return;
            }
        }
    }
}

impl RedisQuotaStore {
    /// Failures in a row and ms left of the pause, from Redis; `None` when it is unavailable.
    async fn backoff_state(&self, key: &ScoreKey) -> Option<(u32, u64)> {
        let failures = self.cluster.score_key(key, "fail");
        let shared = self
            .cluster
            .run(|mut connection| async move {
                BACKOFF_SCRIPT
                    .key(failures)
                    .invoke_async::<(u32, u64)>(&mut connection)
                    .await
            })
            .await;
        match shared {
            Ok(state) => Some(state),
            Err(_) => {
                self.fell_back();
                None
            }
        }
    }
}
