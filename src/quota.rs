//! The outbound limits' state: per-tenant rate windows, 429 cool-downs and failure back-off,
//! behind [`QuotaStore`], the seam where a shared (Redis) store will sit beside the in-process one.
//!
//! Owns *what is remembered* about a tenant's upstream service: how much of its minute and hour
//! windows is spent (governor's GCRA), until when the service asked to be left alone
//! (`Retry-After`), and how many fetches failed in a row. It does not decide when to consult any
//! of it, nor wait: that is the policy stack's job ([`crate::policy`]), which also holds the
//! in-flight cap (a process-local semaphore: sockets are per process, so it never goes into a
//! shared store).
//!
//! Windows and cool-downs are keyed by [`QuotaKey`], a tenant *and* an upstream service:
//! Defender's limits (and its 429s) are shared by every metric read from Defender, Graph has its
//! own per-app, per-tenant quota. Failure back-off is keyed by [`ScoreKey`], a tenant and a
//! metric: one retired endpoint must not silence another metric of the same service.
//!
//! Time: every comparison uses `tokio::time::Instant`, and governor runs on [`TokioClock`], so that
//! tests drive windows, cool-downs and back-off with tokio's paused clock.

use crate::model::{ScoreKey, UpstreamService};
use crate::tenants::{QuotaLimits, Registry, TenantId};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GovernorQuota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
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
    /// Both windows, in the order they are charged.
    pub const ALL: [Window; 2] = [Window::Minute, Window::Hour];
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

/// The state behind the outbound limits. The in-process [`LocalQuotaStore`] for one process; the
/// Redis one ([`crate::cluster::quota::RedisQuotaStore`]: one atomic script over sliding windows,
/// on Redis server time) when several replicas share a tenant's quota. Durations, not instants,
/// cross this seam: a shared store measures time on its own clock.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    /// Charges one call to both windows; `Err(wait)` when one is spent, for the time until a
    /// call fits. A shared store charges both at once or neither; the local one charges the
    /// minute first (a call refused by a spent hour window costs a minute unit: the hour binds
    /// only after a quarter of an hour at the full minute rate).
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
    /// Forgets tenants that left the registry and windows whose limits changed (live reload).
    ///
    /// Failure back-off is forgotten for every tenant: a reload is how an operator fixes
    /// credentials, and every tenant gets a fresh credential with it, so a failing tenant is
    /// tried again at once rather than after its pause. Cool-downs stay: the services imposed them.
    fn retain(&self, registry: &Registry);
}

/// A governor clock over `tokio::time::Instant`, so that `#[tokio::test(start_paused = true)]`
/// drives the rate windows like every other timer in the gateway. Governor's default clock reads
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

type WindowLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Per-key limiter pair, shaped so that no sliding window ever holds more calls than allowed.
struct Limiters {
    limits: QuotaLimits,
    minute: WindowLimiter,
    hour: WindowLimiter,
}

/// Consecutive failures of one key and when it may be called again.
#[derive(Debug, Clone, Copy)]
struct FailureState {
    consecutive: u32,
    until: Instant,
}

/// The in-process quota store: governor limiters, cool-downs and back-off in maps.
#[derive(Default)]
pub struct LocalQuotaStore {
    /// Limiters per key, created on first use (a registry of 10,000 idle tenants costs nothing).
    limiters: RwLock<HashMap<QuotaKey, Arc<Limiters>>>,
    /// Keys a service (Defender or Graph) answered 429 for, and until when they must be left alone.
    cool_downs: Mutex<HashMap<QuotaKey, Instant>>,
    /// Tenants' metrics that keep failing, and until when they are not fetched.
    failures: Mutex<HashMap<ScoreKey, FailureState>>,
    /// The clock every limiter shares.
    clock: TokioClock,
}

impl LocalQuotaStore {
    /// Charges one call to one window; `Err(wait)` when it is spent.
    pub fn charge_window(
        &self,
        key: &QuotaKey,
        limits: QuotaLimits,
        window: Window,
    ) -> Result<(), Duration> {
        let limiters = self.limiters(key, limits);
        let limiter = match window {
            Window::Minute => &limiters.minute,
            Window::Hour => &limiters.hour,
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn limiters(&self, key: &QuotaKey, limits: QuotaLimits) -> Arc<Limiters> {
        if let Some(limiters) = self.limiters.read().get(key) {
            if limiters.limits == limits {
                return limiters.clone();
            }
        }
        let limiters = Arc::new(Limiters {
            limits,
            minute: RateLimiter::direct_with_clock(
                window_quota(limits.per_minute, Duration::from_secs(60)),
                self.clock,
            ),
            hour: RateLimiter::direct_with_clock(
                window_quota(limits.per_hour, Duration::from_secs(3600)),
                self.clock,
            ),
        });
        self.limiters.write().insert(key.clone(), limiters.clone());
        limiters
    }
}

#[async_trait::async_trait]
impl QuotaStore for LocalQuotaStore {
    async fn charge(&self, key: &QuotaKey, limits: QuotaLimits) -> Result<(), Duration> {
        for window in Window::ALL {
            self.charge_window(key, limits, window)?;
        }
        Ok(())
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

    fn retain(&self, registry: &Registry) {
        let keep = |key: &QuotaKey| registry.get(key.tenant.as_str()).is_some();
        self.limiters.write().retain(|key, limiters| {
            registry
                .get(key.tenant.as_str())
                .is_some_and(|tenant| tenant.limits(key.service) == limiters.limits)
        });
        self.cool_downs.lock().retain(|key, _| keep(key));
        self.failures.lock().clear();
    }
}

/// A GCRA quota that never lets more than `limit` calls into any sliding `window`.
///
/// GCRA admits a burst `b` and then one call per period `p`; over a window `w` it admits at most
/// `b + w/p` calls. With `b = max(1, limit/10)` and `p = w / (limit - b)` that is exactly `limit`.
fn window_quota(limit: u32, window: Duration) -> GovernorQuota {
    let limit = limit.max(1);
    let burst = (limit / 10).max(1);
    let refills = limit.saturating_sub(burst).max(1);
    let period = window / refills;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    GovernorQuota::with_period(period)
        .unwrap_or_else(|| GovernorQuota::per_hour(NonZeroU32::MIN))
        .allow_burst(burst)
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
    use governor::clock::FakeRelativeClock;

    /// Counts what a limiter built by `window_quota` admits in the worst sliding window.
    fn worst_window(limit: u32, window: Duration) -> u32 {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(window_quota(limit, window), clock.clone());
        let step = window / 1000;
        let mut admitted = Vec::new();
        let mut elapsed = Duration::ZERO;
        while elapsed < window * 3 {
            while limiter.check().is_ok() {
                admitted.push(elapsed);
            }
            clock.advance(step);
            elapsed += step;
        }
        admitted
            .iter()
            .map(|&start| {
                admitted
                    .iter()
                    .filter(|&&t| t >= start && t < start + window)
                    .count() as u32
            })
            .max()
            .unwrap_or(0)
    }

    fn key(id: &str) -> QuotaKey {
        QuotaKey {
            tenant: TenantId::parse(id).unwrap(),
            service: UpstreamService::Defender,
        }
    }

    /// Charges `window` until it refuses; returns the calls admitted and the wait it asked for.
    fn drain(
        store: &LocalQuotaStore,
        key: &QuotaKey,
        limits: QuotaLimits,
        window: Window,
    ) -> (u32, Duration) {
        let mut admitted = 0;
        loop {
            match store.charge_window(key, limits, window) {
                Ok(()) => admitted += 1,
                Err(wait) => return (admitted, wait),
            }
        }
    }

    #[test]
    fn no_sliding_window_ever_holds_more_than_the_limit() {
        for limit in [1, 2, 7, 100, 1500] {
            let window = if limit == 1500 {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(60)
            };
            let worst = worst_window(limit, window);
            assert!(worst <= limit, "limit {limit}: {worst} calls in one window");
            assert!(
                worst >= limit * 9 / 10,
                "limit {limit}: only {worst} calls used"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_minute_window_refills_on_the_paused_tokio_clock() {
        let store = LocalQuotaStore::default();
        let limits = QuotaLimits {
            per_minute: 10,
            per_hour: 1500,
        };
        let contoso = key("contoso");
        // Burst of a tenth, then one call per 60 s / 9.
        let (burst, wait) = drain(&store, &contoso, limits, Window::Minute);
        assert_eq!(burst, 1);
        assert_eq!(wait, Duration::from_secs(60) / 9);
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        assert!(
            store
                .charge_window(&contoso, limits, Window::Minute)
                .is_err(),
            "not a moment early"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            store.charge_window(&contoso, limits, Window::Minute),
            Ok(())
        );
        // Another tenant's window is its own.
        assert_eq!(
            store.charge_window(&key("fabrikam"), limits, Window::Minute),
            Ok(())
        );
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
            admitted += drain(&store, &contoso, limits, Window::Hour).0;
            tokio::time::advance(Duration::from_secs(59)).await;
        }
        assert!(
            (18..=20).contains(&admitted),
            "{admitted} calls in 59 minutes"
        );
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
