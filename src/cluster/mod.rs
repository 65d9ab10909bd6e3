//! Several replicas: the state they share through Redis (`[cluster]`), behind the seams the
//! single-process gateway already has.
//!
//! Owns the connection to Redis, whether it is usable right now, and the Redis side of each
//! seam: the second cache level and cluster-wide single flight ([`store::TieredStore`] behind
//! [`crate::cache::ScoreStore`]), the per-tenant upstream quota, cool-downs and failure back-off
//! ([`quota::RedisQuotaStore`] behind [`crate::quota::QuotaStore`]), refresher leases
//! ([`Cluster::try_lease`]) and per-key caller limits ([`Cluster::charge_key`]). It does not decide
//! *when* any of these is consulted: the cache, the policy stack, the refresher and the API do.
//!
//! # When Redis is unavailable
//!
//! Every command has a short deadline. The first command that fails on the connection marks
//! Redis *down* (one warning, `scoregate_cluster_redis_up` 0) and starts a probe that pings it
//! until it answers (one info line, the gauge back to 1). While it is down no command is sent at
//! all: each seam falls back to its local half at once (first-level cache, per-replica single
//! flight, a local quota at the configured limit divided by `[cluster] replicas`, the key's local
//! limiter, no lease needed) and counts it in `scoregate_cluster_fallbacks_total{use}`. Nothing
//! here ever fails a request.
//!
//! # Layout
//!
//! - `config`: [`ClusterConfig`], the resolved settings with the secret URL (`config` reads,
//!   checks and resolves `[cluster]` into it).
//! - `quota`: the per-tenant quota as one Lua script over two sliding windows, cool-downs,
//!   back-off.
//! - `store`: moka in front of Redis, and cluster-wide single flight (`SET NX PX` and a token).
//! - this file: the connection, its up/down state, leases and per-key limits.
//!
//! Keys are `{prefix}:{<tenant>}:…`: the tenant in braces is a Redis Cluster hash tag, so that
//! one script's keys (a tenant's two windows and its cool-down) always live on one slot.

pub mod config;
pub mod quota;
pub mod store;

pub use config::ClusterConfig;

use crate::metrics::{ClusterMetrics, ClusterUse};
use crate::model::ScoreKey;
use redis::aio::ConnectionManager;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a Redis command produced no answer. Never shown to callers: every use falls back.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis is known to be unreachable; nothing was sent.
    #[error("Redis is unavailable")]
    Down,
    /// The command did not answer within `[cluster] command_timeout_ms`.
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// A value stored in Redis could not be read back (another version wrote it).
    #[error("unreadable value in Redis: {0}")]
    Decode(String),
}

/// The connection to Redis shared by every seam, and whether it works.
pub struct Cluster {
    /// Reconnects by itself; cloned per command (cheap: one multiplexed connection).
    manager: ConnectionManager,
    /// Prefix of every key, so that several gateways (or tests) can share one Redis.
    prefix: String,
    /// Replicas sharing the quota, for the local fallback's share of it.
    replicas: u32,
    /// Deadline of one command.
    timeout: Duration,
    /// How long a replica trusts its first-level copy before asking Redis for a newer one.
    local_ttl: Duration,
    /// Pause between two looks at Redis while another replica fetches.
    wait_poll: Duration,
    /// Whether Redis answers, and the gauge that says so.
    health: Arc<Health>,
    /// Where the probe runs: the gateway's own runtime, not an HTTP worker's.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// How often an unavailable Redis is pinged.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

impl Cluster {
    /// A lazy connection to `config`'s Redis: nothing is sent until first use, so a gateway
    /// starts (and serves, locally) while Redis is down. Fails only on a malformed URL.
    pub fn connect(
        config: &ClusterConfig,
        metrics: ClusterMetrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Self>, ClusterError> {
        use secrecy::ExposeSecret;
        let client = redis::Client::open(config.url.expose_secret())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Our probe retries; the manager's own retries would hold a command for seconds.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = {
            // The lazy manager spawns its reconnection tasks on the current runtime.
            let _entered = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, manager_config)?
        };
        metrics.redis_up.set(1);
        let cluster = Arc::new(Self {
            manager,
            prefix: config.key_prefix.clone(),
            replicas: config.replicas,
            timeout: config.command_timeout,
            local_ttl: config.local_ttl,
            wait_poll: config.wait_poll,
            health: Arc::new(Health {
                up: AtomicBool::new(true),
                probing: AtomicBool::new(false),
                metrics,
            }),
            runtime,
        });
        // Learn at once whether Redis is there, rather than on the first request.
        let first = cluster.clone();
        cluster.runtime.spawn(async move {
            let ping = |mut connection: ConnectionManager| async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            };
            let _ = first.run(ping).await;
        });
        Ok(cluster)
    }

    /// Whether Redis answers now (shared mode); `false` while the replica runs on its own.
    pub fn is_up(&self) -> bool {
        self.health.up.load(Ordering::Acquire)
    }

    /// Replicas sharing the upstream quota (`[cluster] replicas`).
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// How long a replica serves its first-level copy before asking Redis for a newer one.
    pub fn local_ttl(&self) -> Duration {
        self.local_ttl
    }

    /// Pause between two looks at Redis while another replica fetches.
    pub fn wait_poll(&self) -> Duration {
        self.wait_poll
    }

    /// Counts one use that ran locally because Redis was unavailable.
    pub fn fell_back(&self, what: ClusterUse) {
        self.health.metrics.fallback(what);
    }

    /// The key `{prefix}:{<tenant>}:<rest>`: the tenant is the hash tag.
    pub fn tenant_key(&self, tenant: &str, rest: &str) -> String {
        format!("{}:{{{tenant}}}:{rest}", self.prefix)
    }

    /// The key of something per tenant and metric: `{prefix}:{<tenant>}:<kind>:<metric>`.
    pub fn score_key(&self, key: &ScoreKey, kind: &str) -> String {
        self.tenant_key(
            key.tenant.as_str(),
            &format!("{kind}:{}", key.metric.as_str()),
        )
    }

    /// The key of what is shared about one customer's reading:
    /// `{prefix}:{<tenant>}:<kind>:<metric>:<entra tenant>`. The Entra tenant the id stands
    /// for is part of the name, so replicas that disagree on it (one reloaded after the id was
    /// re-pointed, one not yet) never share a reading or wait for each other's fetch.
    pub fn reading_key(&self, key: &ScoreKey, kind: &str, entra_tenant: &str) -> String {
        self.tenant_key(
            key.tenant.as_str(),
            &format!("{kind}:{}:{entra_tenant}", key.metric.as_str()),
        )
    }

    /// Runs one command with the deadline; a connection failure or timeout marks Redis down.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, ClusterError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(ClusterError::Down);
        }
        match tokio::time::timeout(self.timeout, command(self.manager.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if is_unavailable(&error) {
                    self.mark_down(&format!("{error}"));
                }
                Err(ClusterError::Redis(error))
            }
            Err(_) => {
                self.mark_down("no answer within the command timeout");
                Err(ClusterError::Timeout(self.timeout))
            }
        }
    }

    /// Flips to local mode (warning once) and starts the probe that flips back.
    fn mark_down(&self, why: &str) {
        if self.health.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "Redis is unavailable ({why}): this replica serves from its own cache, with a \
                 local quota of 1/{} of each limit, until Redis answers again",
                self.replicas
            );
            self.health.metrics.redis_up.set(0);
        }
        if self.health.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let manager = self.manager.clone();
        let timeout = self.timeout;
        // Weak: a probe must not keep a dropped gateway's connection alive.
        let health = Arc::downgrade(&self.health);
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let Some(health) = health.upgrade() else {
                    return;
                };
                let mut connection = manager.clone();
                let command = redis::cmd("PING");
                let ping = command.query_async::<String>(&mut connection);
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, ping).await {
                    health.probing.store(false, Ordering::Release);
                    if !health.up.swap(true, Ordering::AcqRel) {
                        tracing::info!(
                            "Redis answers again: this replica shares cache, quota and work \
                             with the others"
                        );
                        health.metrics.redis_up.set(1);
                    }
                    return;
                }
            }
        });
    }
}

/// Whether Redis is usable, shared with the probe.
struct Health {
    /// Whether commands are sent; cleared by the first failure, set by the probe.
    up: AtomicBool,
    /// Whether a probe runs (at most one).
    probing: AtomicBool,
    /// `scoregate_cluster_*`.
    metrics: ClusterMetrics,
}

/// Whether a command's error means Redis cannot be reached (as opposed to an error answer).
fn is_unavailable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// A refresher's right to refresh one tenant's metric this period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This replica refreshes; the token releases the lease should the refresh fail.
    Held(String),
    /// Another replica refreshes this period.
    Taken,
    /// Redis is unavailable: every replica refreshes its own cache.
    Local,
}

/// Charges one request to a key's sliding minute (`KEYS[1]`) unless it holds `ARGV[1]`
/// requests; `ARGV[2]` is a unique member. Returns `{allowed (1|0), requests in the window,
/// ms until the oldest leaves it}`.
pub const KEY_CHARGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local span = 60000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], span / 1000)
  count = count + 1
  allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = 0
if oldest[2] then reset = math.ceil((tonumber(oldest[2]) + span - now) / 1000) end
return {allowed, count, reset}
";

static KEY_CHARGE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(KEY_CHARGE));

impl Cluster {
    /// Takes the refresh lease of `key` for `period` (`SET NX PX` with a token). A successful
    /// refresh keeps it until the period ends, so that no other replica refreshes the same
    /// metric again within it; a failed one gives it back ([`Cluster::release_lease`]).
    pub async fn try_lease(&self, key: &ScoreKey, period: Duration) -> Lease {
        let (token, taken) = self.take_token(self.score_key(key, "lease"), period).await;
        match taken {
            Ok(true) => Lease::Held(token),
            Ok(false) => Lease::Taken,
            Err(_) => {
                self.fell_back(ClusterUse::Lease);
                Lease::Local
            }
        }
    }

    /// Gives back a lease (compare-and-delete: never another replica's later one).
    pub async fn release_lease(&self, key: &ScoreKey, token: String) {
        self.give_back(self.score_key(key, "lease"), token).await;
    }

    /// Sets `key` to a fresh random token unless it is set (`SET NX PX`), for `hold` (at least
    /// 1 ms): the token, and whether it was set (`false`: another replica holds the key). The
    /// one way leases and single-flight claims are taken.
    pub(crate) async fn take_token(
        &self,
        key: String,
        hold: Duration,
    ) -> (String, Result<bool, ClusterError>) {
        let token = uuid::Uuid::new_v4().to_string();
        let millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let value = token.clone();
        let taken = self
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await;
        (token, taken.map(|set| set.is_some()))
    }

    /// Deletes `key` if it still holds `token` (compare-and-delete: never another replica's
    /// later one). Best effort: a key left behind expires with its hold.
    pub(crate) async fn give_back(&self, key: String, token: String) {
        let _ = self
            .run(|mut connection| async move {
                store::RELEASE_SCRIPT
                    .key(key)
                    .arg(token)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
    }

    /// Charges one request to the API key `name` (a sliding minute of `per_minute` requests,
    /// shared by every replica); `None` while Redis is unavailable (the key's local limiter
    /// decides then).
    pub async fn charge_key(
        &self,
        name: &str,
        per_minute: u32,
    ) -> Option<Result<crate::auth::RateState, crate::auth::RateLimited>> {
        let rate_key = format!(
            "{}:{{key:{}}}:rate",
            self.prefix,
            hex::encode(name.as_bytes())
        );
        let member = uuid::Uuid::new_v4().to_string();
        let limit = per_minute.max(1);
        let answer = self
            .run(|mut connection| async move {
                KEY_CHARGE_SCRIPT
                    .key(rate_key)
                    .arg(limit)
                    .arg(member)
                    .invoke_async::<(u8, u32, u64)>(&mut connection)
                    .await
            })
            .await;
        let Ok((allowed, count, reset_ms)) = answer else {
            self.fell_back(ClusterUse::KeyLimit);
            return None;
        };
        Some(if allowed == 1 {
            Ok(crate::auth::RateState {
                limit,
                remaining: limit.saturating_sub(count),
                reset_seconds: reset_ms.div_ceil(1000),
            })
        } else {
            Err(crate::auth::RateLimited {
                retry_after: Duration::from_millis(reset_ms.max(1)),
                limit,
            })
        })
    }
}
