//! The outbound limits' state: per-tenant rate windows, 429 cool-downs and failure back-off,
//! behind [`QuotaStore`], the seam where the shared (Redis) store sits beside the in-process one.
//!
//! Owns *what is remembered* about a tenant's upstream service: which calls its minute and hour
//! windows hold, until when the service asked to be left alone (`Retry-After`), and how many
//! fetches failed in a row. It does not decide when to consult any of it, nor wait: that is the
//! policy stack's job ([`crate::policy`]), which also holds the in-flight cap (a process-local
//! semaphore: sockets are per process, so it never goes into a shared store).
//!
//! # How the windows count
//!
//! Both stores count the same way, as Microsoft does: each [`Window`] is a sliding log of call
//! times over its [`Window::span`]. A call is admitted when neither window holds its limit of
//! calls younger than its span, and is then recorded in both; a refused call is recorded in
//! neither, and waits until the oldest call of every full window has left it. A key cooling down
//! is refused for the rest of its cool-down. [`LocalQuotaStore`] keeps the logs in process; the
//! Redis store ([`crate::cluster::quota::RedisQuotaStore`]) runs the same rule in one Lua script
//! on Redis server time. One suite of cases holds both to it (`tests/api/quota_stores.rs`).
//!
//! Windows and cool-downs are keyed by [`QuotaKey`], a tenant *and* an upstream service:
//! Defender's limits (and its 429s) are shared by every metric read from Defender, Graph has its
//! own per-app, per-tenant quota. Failure back-off is keyed by [`ScoreKey`], a tenant and a
//! metric: one retired endpoint must not silence another metric of the same service.
//!
//! Time: every comparison uses `tokio::time::Instant`, so that tests drive windows, cool-downs and
//! back-off with tokio's paused clock. [`TokioClock`] gives governor (the API keys' limiters) the
//! same clock.

use crate::model::{ScoreKey, UpstreamService};
use crate::tenants::{QuotaLimits, Registry, TenantId};
use governor::clock::Clock;
use governor::nanos::Nanos;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Whose limits: one tenant's calls to one upstream service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The upstream service whose limits apply (Defender's are shared by its metrics).
    pub service: UpstreamService,
}

/// One of the two sliding windows Microsoft counts calls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The per-minute limit.
    Minute,
    /// The per-hour limit.
    Hour,
}

impl Window {
    /// Both windows.
    pub const ALL: [Window; 2] = [Window::Minute, Window::Hour];

    /// How far back the window looks.
    pub const fn span(self) -> Duration {
        match self {
            Self::Minute => Duration::from_secs(60),
            Self::Hour => Duration::from_secs(3600),
        }
    }

    /// The calls `limits` allow in the window (at least one: a limit of 0 is taken as 1).
    pub fn limit(self, limits: QuotaLimits) -> u32 {
        match self {
            Self::Minute => limits.per_minute,
            Self::Hour => limits.per_hour,
        }
        .max(1)
    }
}

/// The back-off of a tenant that keeps failing: doubles per consecutive failure, capped.
#[derive(Debug, Clone, Copy)]
pub struct FailureBackoff {
    /// Pause after the first failure.
    pub base: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Default for FailureBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl FailureBackoff {
    /// The pause after `consecutive` failures in a row (1 for the first).
    pub fn pause(&self, consecutive: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << consecutive.saturating_sub(1).min(16))
            .min(self.max)
    }
}

/// The share of a tenant's limits one replica may spend on its own while the shared store
/// (Redis) is unavailable: the configured limits divided by the replicas (`[cluster] replicas`),
/// at least one call per window. Replicas that cannot coordinate then stay within Microsoft's
/// limits together; the one place this share is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaShareWhenRedisDown {
    /// Replicas sharing the tenants' limits (0 is taken as 1).
    pub replicas: u32,
}

impl ReplicaShareWhenRedisDown {
    /// This replica's share of `limits`.
    pub fn of(&self, limits: QuotaLimits) -> QuotaLimits {
        let replicas = self.replicas.max(1);
        QuotaLimits {
            per_minute: (limits.per_minute / replicas).max(1),
            per_hour: (limits.per_hour / replicas).max(1),
        }
    }
}

/// The state behind the outbound limits. The in-process [`LocalQuotaStore`] for one process; the
/// Redis one ([`crate::cluster::quota::RedisQuotaStore`]: one atomic script over sliding windows,
/// on Redis server time) when several replicas share a tenant's quota. Durations, not instants,
/// cross this seam: a shared store measures time on its own clock.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    /// Charges one call to both windows, or to neither: `Err(wait)` when one is full (for the
    /// time until a call fits) or the key cools down (for the rest of the cool-down). See the
    /// module documentation for how the windows count.
    async fn charge(&self, key: &QuotaKey, limits: QuotaLimits) -> Result<(), Duration>;
    /// Leaves the key alone for `duration` (a longer cool-down already running is kept).
    async fn cool_down(&self, key: &QuotaKey, duration: Duration);
    /// Time left in the key's cool-down, if any.
    async fn cool_down_left(&self, key: &QuotaKey) -> Option<Duration>;
    /// Keys in cool-down now, as far as this process knows (for `/metrics`).
    fn cooling_down(&self) -> usize;
    /// Records a failed fetch and pauses the key for `backoff`'s pause; returns the failures in a
    /// row, this one included.
    async fn record_failure(&self, key: &ScoreKey, backoff: &FailureBackoff) -> u32;
    /// Records a successful fetch: the back-off is over.
    async fn record_success(&self, key: &ScoreKey);
    /// Time left in the key's failure back-off, if any.
    async fn backoff_left(&self, key: &ScoreKey) -> Option<Duration>;
    /// Failed fetches of the key in a row (0 after a success).
    async fn consecutive_failures(&self, key: &ScoreKey) -> u32;
    /// Forgets tenants that left the registry (live reload). Calls stay counted when a tenant's
    /// limits change: the new limits apply to the calls already made, as Microsoft's do.
    ///
    /// Failure back-off is forgotten for every tenant: a reload is how an operator fixes
    /// credentials, and every tenant gets a fresh credential with it, so a failing tenant is
    /// tried again at once rather than after its pause. Cool-downs stay: the services imposed them.
    async fn retain(&self, registry: &Registry);
}

/// A governor clock over `tokio::time::Instant`, so that `#[tokio::test(start_paused = true)]`
/// drives the API keys' limiters like every other timer in the gateway. Governor's default clock reads
/// the machine's monotonic time, which a paused runtime cannot hold still.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    /// Governor counts nanoseconds from an origin; any fixed instant will do.
    origin: Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(Instant::now().saturating_duration_since(self.origin))
    }
}

/// The calls of one key younger than the longest window (the hour), oldest first. One log
/// serves both windows: every admitted call is in both, so the minute's calls are the log's
/// youngest.
#[derive(Debug, Default)]
struct CallLog {
    calls: VecDeque<Instant>,
}

impl CallLog {
    /// The rule of the module documentation, at `now`.
    fn charge(&mut self, limits: QuotaLimits, now: Instant) -> Result<(), Duration> {
        let longest = Window::Hour.span();
        while self
            .calls
            .front()
            .is_some_and(|&call| now.saturating_duration_since(call) >= longest)
        {
            self.calls.pop_front();
        }
        let mut wait = Duration::ZERO;
        for window in Window::ALL {
            let span = window.span();
            let inside = self
                .calls
                .iter()
                .rev()
                .take_while(|&&call| now.saturating_duration_since(call) < span)
                .count();
            let limit = usize::try_from(window.limit(limits)).unwrap_or(usize::MAX);
            if inside >= limit {
                // The oldest call inside the window: the wait is until it leaves.
                if let Some(&oldest) = self.calls.get(self.calls.len() - inside) {
                    wait = wait.max(instant_after(oldest, span).saturating_duration_since(now));
                }
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        self.calls.push_back(now);
        Ok(())
    }
}

/// Consecutive failures of one key and when it may be called again.
#[derive(Debug, Clone, Copy)]
struct FailureState {
    consecutive: u32,
    until: Instant,
}

/// The in-process quota store: call logs, cool-downs and back-off in maps.
#[derive(Default)]
pub struct LocalQuotaStore {
    /// Call logs per key, created on first use (a registry of 10,000 idle tenants costs nothing).
    calls: Mutex<HashMap<QuotaKey, CallLog>>,
    /// Keys a service (Defender or Graph) answered 429 for, and until when they must be left alone.
    cool_downs: Mutex<HashMap<QuotaKey, Instant>>,
    /// Tenants' metrics that keep failing, and until when they are not fetched.
    failures: Mutex<HashMap<ScoreKey, FailureState>>,
}

#[async_trait::async_trait]
impl QuotaStore for LocalQuotaStore {
    async fn charge(&self, key: &QuotaKey, limits: QuotaLimits) -> Result<(), Duration> {
        if let Some(left) = self.cool_down_left(key).await {
            return Err(left);
        }
        self.calls
            .lock()
            .entry(key.clone())
            .or_default()
            .charge(limits, Instant::now())
    }

    async fn cool_down(&self, key: &QuotaKey, duration: Duration) {
        let until = instant_after(Instant::now(), duration);
        let mut cool_downs = self.cool_downs.lock();
        let entry = cool_downs.entry(key.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    async fn cool_down_left(&self, key: &QuotaKey) -> Option<Duration> {
        let mut cool_downs = self.cool_downs.lock();
        let until = *cool_downs.get(key)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            cool_downs.remove(key);
            None
        }
    }

    fn cooling_down(&self) -> usize {
        let now = Instant::now();
        self.cool_downs
            .lock()
            .values()
            .filter(|&&until| until > now)
            .count()
    }

    async fn record_failure(&self, key: &ScoreKey, backoff: &FailureBackoff) -> u32 {
        let mut failures = self.failures.lock();
        let consecutive = failures.get(key).map_or(0, |state| state.consecutive) + 1;
        failures.insert(
            key.clone(),
            FailureState {
                consecutive,
                until: instant_after(Instant::now(), backoff.pause(consecutive)),
            },
        );
        consecutive
    }

    async fn record_success(&self, key: &ScoreKey) {
        self.failures.lock().remove(key);
    }

    async fn backoff_left(&self, key: &ScoreKey) -> Option<Duration> {
        let until = self.failures.lock().get(key)?.until;
        let now = Instant::now();
        // Over at `until` exactly, as a cool-down is: a zero pause is no pause.
        (until > now).then(|| until - now)
    }

    async fn consecutive_failures(&self, key: &ScoreKey) -> u32 {
        self.failures
            .lock()
            .get(key)
            .map_or(0, |state| state.consecutive)
    }

    async fn retain(&self, registry: &Registry) {
        let keep = |key: &QuotaKey| registry.get(key.tenant.as_str()).is_some();
        self.calls.lock().retain(|key, _| keep(key));
        self.cool_downs.lock().retain(|key, _| keep(key));
        self.failures.lock().clear();
    }
}

/// The instant `wait` after `from`, saturating at a far-future instant instead of panicking.
///
/// Every duration that comes from outside (a `Retry-After`, a configured timeout, a caller's
/// `timeout_ms`) meets an `Instant` through this function: `Instant + Duration` panics on
/// overflow, and a panic inside a spawned fetch once wedged a tenant.
pub fn instant_after(from: Instant, wait: Duration) -> Instant {
    // About 30 years: "never" for a server process, and representable on every platform.
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    from.checked_add(wait)
        .or_else(|| from.checked_add(FAR_FUTURE))
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> QuotaKey {
        QuotaKey {
            tenant: TenantId::parse(id).unwrap(),
            service: UpstreamService::Defender,
        }
    }

    /// Charges until a call is refused; returns the calls admitted and the wait asked for.
    async fn drain(
        store: &LocalQuotaStore,
        key: &QuotaKey,
        limits: QuotaLimits,
    ) -> (u32, Duration) {
        let mut admitted = 0;
        loop {
            match store.charge(key, limits).await {
                Ok(()) => admitted += 1,
                Err(wait) => return (admitted, wait),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_minute_window_slides_on_the_paused_tokio_clock() {
        let store = LocalQuotaStore::default();
        let limits = QuotaLimits {
            per_minute: 10,
            per_hour: 1500,
        };
        let contoso = key("contoso");
        assert_eq!(
            drain(&store, &contoso, limits).await,
            (10, Duration::from_secs(60))
        );
        tokio::time::advance(Duration::from_secs(60) - Duration::from_millis(1)).await;
        assert_eq!(
            store.charge(&contoso, limits).await,
            Err(Duration::from_millis(1)),
            "not a moment early"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(drain(&store, &contoso, limits).await.0, 10);
        // Another tenant's window is its own.
        assert_eq!(store.charge(&key("fabrikam"), limits).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hour_window_holds_its_limit_over_an_hour_of_paused_time() {
        let store = LocalQuotaStore::default();
        let limits = QuotaLimits {
            per_minute: 1000,
            per_hour: 20,
        };
        let contoso = key("contoso");
        let mut admitted = 0;
        for _ in 0..60 {
            admitted += drain(&store, &contoso, limits).await.0;
            tokio::time::advance(Duration::from_secs(59)).await;
        }
        assert_eq!(admitted, 20, "{admitted} calls in 59 minutes");
    }

    #[test]
    fn a_replica_without_redis_takes_its_share_of_each_limit_and_at_least_one_call() {
        let limits = QuotaLimits {
            per_minute: 100,
            per_hour: 1500,
        };
        let share = |replicas| ReplicaShareWhenRedisDown { replicas }.of(limits);
        assert_eq!(
            share(3),
            QuotaLimits {
                per_minute: 33,
                per_hour: 500
            }
        );
        assert_eq!(share(0), limits, "no replicas counts as one");
        assert_eq!(share(1000).per_minute, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cool_down_refuses_calls_until_it_has_passed() {
        let store = LocalQuotaStore::default();
        let contoso = key("contoso");
        store.cool_down(&contoso, Duration::from_secs(30)).await;
        store.cool_down(&contoso, Duration::from_secs(10)).await;
        assert_eq!(
            store.cool_down_left(&contoso).await,
            Some(Duration::from_secs(30)),
            "the longer one stays"
        );
        assert_eq!(store.cooling_down(), 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(store.cool_down_left(&contoso).await, None);
        assert_eq!(store.cooling_down(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cool_down_longer_than_the_clock_can_represent_does_not_panic() {
        let store = LocalQuotaStore::default();
        let contoso = key("contoso");
        store
            .cool_down(&contoso, Duration::from_secs(u64::MAX))
            .await;
        assert!(store.cool_down_left(&contoso).await.unwrap() > Duration::from_secs(86_400 * 365));
        assert!(instant_after(Instant::now(), Duration::MAX) > Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_up_to_the_cap_and_expire_on_the_clock() {
        let backoff = FailureBackoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(40),
        };
        let store = LocalQuotaStore::default();
        let contoso = ScoreKey {
            tenant: TenantId::parse("contoso").unwrap(),
            metric: crate::model::Metric::Device,
        };
        let mut pauses = Vec::new();
        for _ in 0..5 {
            store.record_failure(&contoso, &backoff).await;
            pauses.push(store.backoff_left(&contoso).await.unwrap().as_secs());
        }
        assert_eq!(pauses, vec![5, 10, 20, 40, 40]);
        assert_eq!(store.consecutive_failures(&contoso).await, 5);
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(
            store.backoff_left(&contoso).await,
            None,
            "the pause is over"
        );
        assert_eq!(
            store.consecutive_failures(&contoso).await,
            5,
            "the count is not"
        );
        store.record_success(&contoso).await;
        assert_eq!(store.consecutive_failures(&contoso).await, 0);
    }
}
