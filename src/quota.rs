//! Outbound limits that protect Defender (and the customers' quotas) from the gateway.
//!
//! Owns four decisions, each in one place:
//! - the per-tenant rate limits (governor), charged once per real HTTP call to Defender;
//! - the cool-down a Defender 429 imposes (`Retry-After`), during which nothing is sent;
//! - the exponential back-off of a tenant that keeps failing;
//! - the global cap on calls in flight (a semaphore).
//!
//! It does not decide whether a cached value is good enough: that is the cache's job.

use crate::metrics::{Metrics, QuotaRefusal};
use crate::tenants::{QuotaLimits, Registry, Tenant, TenantId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a call may not be made now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The tenant's quota or cool-down forbids a call for `retry_after`.
    #[error("the tenant's outbound quota is spent; retry after {} s", retry_after.as_secs())]
    Throttled {
        /// Time until a call may be made.
        retry_after: Duration,
    },
    /// A call slot would only free up after the deadline.
    #[error("no upstream call slot before the deadline")]
    Deadline,
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

/// Per-tenant limiter pair, shaped so that no sliding window ever holds more calls than allowed.
struct TenantLimiter {
    limits: QuotaLimits,
    minute: DefaultDirectRateLimiter,
    hour: DefaultDirectRateLimiter,
}

/// Consecutive failures of one tenant and when it may be called again.
#[derive(Debug, Clone, Copy)]
struct FailureState {
    consecutive: u32,
    until: Instant,
}

/// The outbound limits, shared by every request and the refresher.
pub struct Quota {
    /// Limiters per tenant, created on first use (a registry of 10,000 idle tenants costs nothing).
    limiters: RwLock<HashMap<TenantId, Arc<TenantLimiter>>>,
    /// Tenants Defender answered 429 for, and until when they must be left alone.
    cool_downs: Mutex<HashMap<TenantId, Instant>>,
    /// Tenants that keep failing, and until when they are not called.
    failures: Mutex<HashMap<TenantId, FailureState>>,
    /// Calls in flight over all tenants; Defender and our sockets are finite.
    in_flight: Arc<Semaphore>,
    /// Size of `in_flight`, for reporting.
    max_in_flight: usize,
    /// Back-off policy of failing tenants.
    backoff: FailureBackoff,
    /// Where waits and refusals are counted.
    metrics: Arc<Metrics>,
}

/// Permission to make one upstream call; dropping it frees the in-flight slot.
#[derive(Debug)]
pub struct CallPermit {
    _slot: OwnedSemaphorePermit,
}

impl Quota {
    /// Creates the limits with a global cap of `max_in_flight` calls.
    pub fn new(max_in_flight: usize, backoff: FailureBackoff, metrics: Arc<Metrics>) -> Self {
        Self {
            limiters: RwLock::default(),
            cool_downs: Mutex::default(),
            failures: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            backoff,
            metrics,
        }
    }

    /// Waits (within `deadline`) until the tenant may be called, charges one call and takes an
    /// in-flight slot. A wait that would pass the deadline is refused at once.
    pub async fn admit(
        &self,
        tenant: &Tenant,
        deadline: Instant,
    ) -> Result<CallPermit, QuotaError> {
        if let Some(retry_after) = self.cool_down_left(&tenant.id) {
            self.metrics.quota_refusal(QuotaRefusal::CoolDown);
            return Err(QuotaError::Throttled { retry_after });
        }
        let limiter = self.limiter(tenant);
        for window in [&limiter.minute, &limiter.hour] {
            loop {
                match window.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        if instant_after(Instant::now(), wait) > deadline {
                            self.metrics.quota_refusal(QuotaRefusal::Rate);
                            return Err(QuotaError::Throttled {
                                retry_after: wait.max(Duration::from_secs(1)),
                            });
                        }
                        self.metrics.quota_wait();
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        match tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(CallPermit { _slot: slot }),
            // The semaphore is never closed; treat it like a deadline to stay total.
            Ok(Err(_)) | Err(_) => {
                self.metrics.quota_refusal(QuotaRefusal::InFlight);
                Err(QuotaError::Deadline)
            }
        }
    }

    /// Puts the tenant in cool-down: nothing is sent to it for `retry_after`.
    pub fn cool_down(&self, tenant: &TenantId, retry_after: Duration) {
        let until = instant_after(Instant::now(), retry_after);
        let mut cool_downs = lock(&self.cool_downs);
        let entry = cool_downs.entry(tenant.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Time left in the tenant's cool-down, if any.
    pub fn cool_down_left(&self, tenant: &TenantId) -> Option<Duration> {
        let mut cool_downs = lock(&self.cool_downs);
        let until = *cool_downs.get(tenant)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            cool_downs.remove(tenant);
            None
        }
    }

    /// Number of tenants in cool-down now.
    pub fn tenants_cooling_down(&self) -> usize {
        let now = Instant::now();
        lock(&self.cool_downs)
            .values()
            .filter(|&&until| until > now)
            .count()
    }

    /// Records a failed fetch: the tenant is left alone for an exponentially growing pause.
    pub fn record_failure(&self, tenant: &TenantId) {
        let mut failures = lock(&self.failures);
        let consecutive = failures.get(tenant).map_or(0, |state| state.consecutive) + 1;
        let pause = self
            .backoff
            .base
            .saturating_mul(1u32 << (consecutive - 1).min(16))
            .min(self.backoff.max);
        failures.insert(
            tenant.clone(),
            FailureState {
                consecutive,
                until: instant_after(Instant::now(), pause),
            },
        );
    }

    /// Records a successful fetch: the back-off is over.
    pub fn record_success(&self, tenant: &TenantId) {
        lock(&self.failures).remove(tenant);
    }

    /// Time left in the tenant's failure back-off, if any.
    pub fn backoff_left(&self, tenant: &TenantId) -> Option<Duration> {
        let failures = lock(&self.failures);
        let until = failures.get(tenant)?.until;
        until.checked_duration_since(Instant::now())
    }

    /// Consecutive failed fetches of the tenant (0 after a success).
    pub fn consecutive_failures(&self, tenant: &TenantId) -> u32 {
        lock(&self.failures)
            .get(tenant)
            .map_or(0, |state| state.consecutive)
    }

    /// Upstream calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    /// In-flight slots free now: background work only starts while enough are spare.
    pub fn spare_slots(&self) -> usize {
        self.in_flight.available_permits()
    }

    /// The global cap on calls in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Forgets tenants that left the registry and limiters whose limits changed (live reload).
    ///
    /// Failure back-off is forgotten for every tenant: a reload is how an operator fixes
    /// credentials, and every tenant gets a fresh credential with it, so a failing tenant is
    /// tried again at once rather than after its pause. Cool-downs stay: they are Defender's.
    pub fn retain(&self, registry: &Registry) {
        let keep = |id: &TenantId| registry.get(id.as_str()).is_some();
        write(&self.limiters).retain(|id, limiter| {
            registry
                .get(id.as_str())
                .is_some_and(|tenant| tenant.quota == limiter.limits)
        });
        lock(&self.cool_downs).retain(|id, _| keep(id));
        lock(&self.failures).clear();
    }

    fn limiter(&self, tenant: &Tenant) -> Arc<TenantLimiter> {
        if let Some(limiter) = read(&self.limiters).get(&tenant.id) {
            if limiter.limits == tenant.quota {
                return limiter.clone();
            }
        }
        let limiter = Arc::new(TenantLimiter {
            limits: tenant.quota,
            minute: RateLimiter::direct(window_quota(
                tenant.quota.per_minute,
                Duration::from_secs(60),
            )),
            hour: RateLimiter::direct(window_quota(
                tenant.quota.per_hour,
                Duration::from_secs(3600),
            )),
        });
        write(&self.limiters).insert(tenant.id.clone(), limiter.clone());
        limiter
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent: keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    async fn a_cool_down_refuses_calls_until_it_has_passed() {
        let quota = Quota::new(4, FailureBackoff::default(), Arc::default());
        let id = TenantId::parse("contoso").unwrap();
        quota.cool_down(&id, Duration::from_secs(30));
        assert!(quota.cool_down_left(&id).unwrap() > Duration::from_secs(29));
        assert_eq!(quota.tenants_cooling_down(), 1);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(quota.cool_down_left(&id), None);
        assert_eq!(quota.tenants_cooling_down(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cool_down_longer_than_the_clock_can_represent_does_not_panic() {
        let quota = Quota::new(4, FailureBackoff::default(), Arc::default());
        let id = TenantId::parse("contoso").unwrap();
        quota.cool_down(&id, Duration::from_secs(u64::MAX));
        assert!(quota.cool_down_left(&id).unwrap() > Duration::from_secs(86_400 * 365));
        assert!(instant_after(Instant::now(), Duration::MAX) > Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_up_to_the_cap() {
        let backoff = FailureBackoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(40),
        };
        let quota = Quota::new(4, backoff, Arc::default());
        let id = TenantId::parse("contoso").unwrap();
        let mut pauses = Vec::new();
        for _ in 0..5 {
            quota.record_failure(&id);
            pauses.push(quota.backoff_left(&id).unwrap().as_secs());
        }
        assert_eq!(pauses, vec![5, 10, 20, 40, 40]);
        assert_eq!(quota.consecutive_failures(&id), 5);
        quota.record_success(&id);
        assert_eq!(quota.backoff_left(&id), None);
        assert_eq!(quota.consecutive_failures(&id), 0);
    }
}
