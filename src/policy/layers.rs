//! The layers of the outbound stack, each a small type: the gate (cool-downs and back-off) and
//! its leave ([`Admitted`]), retries, the rate windows, the tenant slots and the global in-flight
//! cap with its [`Priority`]. Their order is written once, in [`super::Outbound`].

use crate::metrics::{Metrics, QuotaRefusal};
use crate::quota::{instant_after, QuotaKey, QuotaStore};
use crate::tenants::{Registry, Tenant};
use crate::upstream::{ScoreKey, UpstreamError, UpstreamService};
use parking_lot::Mutex;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why the gate refuses a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gated {
    /// A 429 cool-down runs for this long still.
    CoolDown(Duration),
    /// A failure back-off runs for this long still.
    BackOff(Duration),
}

impl Gated {
    /// The error a caller sees when nothing better (an earlier failure) is known, for a fetch
    /// from `service`.
    pub fn into_error(self, service: UpstreamService) -> UpstreamError {
        match self {
            Self::CoolDown(retry_after) => UpstreamError::Throttled {
                service,
                retry_after,
            },
            Self::BackOff(left) => UpstreamError::Failed {
                service,
                detail: format!(
                    "the tenant's fetches keep failing; the next attempt is in {} s",
                    left.as_secs().max(1)
                ),
            },
        }
    }
}

/// The gate's leave for one fetch of one tenant's metric: [`super::Outbound::fetch_admitted`]
/// takes it by value, so a fetch is gated once, by whoever asked the gate (the cache, before it
/// gives the fetch a single-flight slot), and never again on its way to the source.
#[derive(Debug)]
#[must_use = "a leave is spent by the fetch it was asked for"]
pub struct Admitted {
    /// Whose windows, cool-down and slots the fetch uses.
    pub(super) quota: QuotaKey,
    /// Whose back-off its outcome feeds.
    pub(super) key: ScoreKey,
}

/// Layer 1: refuses tenants in cool-down or back-off.
pub(super) struct Gate {
    pub(super) store: Arc<dyn QuotaStore>,
    pub(super) metrics: Arc<Metrics>,
}

impl Gate {
    /// One evaluation of the gate: two look-ups in the quota store (two Redis round trips in a
    /// cluster).
    pub(super) async fn check(&self, quota: QuotaKey, key: ScoreKey) -> Result<Admitted, Gated> {
        if let Some(left) = self.store.cool_down_left(&quota).await {
            self.metrics.quota_refusal(QuotaRefusal::CoolDown);
            return Err(Gated::CoolDown(left));
        }
        match self.store.backoff_left(&key).await {
            Some(left) => Err(Gated::BackOff(left)),
            None => Ok(Admitted { quota, key }),
        }
    }
}

/// Layer 2: full-jitter exponential pauses between attempts, a bounded number of times.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Most retries after the first attempt.
    pub max_retries: u32,
    /// Ceiling of the first pause.
    pub base: Duration,
    /// Highest ceiling of any pause.
    pub max: Duration,
}

impl Retries {
    /// `[upstream]`'s `max_retries`, `retry_base_ms` and `retry_max_ms`.
    pub fn of(settings: &crate::upstream::UpstreamSettings) -> Self {
        Self {
            max_retries: settings.max_retries,
            base: Duration::from_millis(settings.retry_base_ms),
            max: Duration::from_millis(settings.retry_max_ms),
        }
    }

    /// The pause before retry number `retry` (1 for the first): random up to
    /// `base * 2^(retry-1)`, capped at `max`. Random so that tenants failing together do not
    /// retry together.
    pub fn pause(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max);
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// The pause before another attempt after `retries` retries, or `None` when the retries are
    /// spent or the pause would reach `deadline`.
    pub(super) fn next(&self, retries: u32, deadline: Instant) -> Option<Duration> {
        if retries >= self.max_retries {
            return None;
        }
        let pause = self.pause(retries + 1);
        (instant_after(Instant::now(), pause) < deadline).then_some(pause)
    }
}

/// Layer 2.1: one charge per attempt to the tenant's minute and hour windows.
pub(super) struct RateLimit {
    pub(super) store: Arc<dyn QuotaStore>,
    pub(super) metrics: Arc<Metrics>,
}

impl RateLimit {
    /// Charges one call, waiting (within `deadline`) for the windows; a wait that would pass the
    /// deadline is refused at once.
    pub(super) async fn charge(
        &self,
        key: &QuotaKey,
        tenant: &Tenant,
        deadline: Instant,
    ) -> Result<(), UpstreamError> {
        while let Err(wait) = self.store.charge(key, tenant.limits(key.service)).await {
            if instant_after(Instant::now(), wait) > deadline {
                self.metrics.quota_refusal(QuotaRefusal::Rate);
                return Err(UpstreamError::Throttled {
                    service: key.service,
                    retry_after: wait.max(Duration::from_secs(1)),
                });
            }
            self.metrics.quota_wait();
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// Layer 2.2: an upstream service's cap on one tenant's calls at once (Graph's 4 per app and
/// tenant). Process-local, like the global cap: a slot is a call on our sockets.
pub(super) struct TenantSlots {
    /// Per tenant and service: the cap it was made for, and its slots.
    pub(super) slots: Mutex<HashMap<QuotaKey, (u32, Arc<Semaphore>)>>,
    pub(super) metrics: Arc<Metrics>,
}

impl TenantSlots {
    /// Takes one of the tenant's slots for its service, waiting until `deadline` at most; `None`
    /// when the service caps nothing. Refused as `Throttled`: the tenant's own limit is spent.
    pub(super) async fn acquire(
        &self,
        key: &QuotaKey,
        tenant: &Tenant,
        deadline: Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, UpstreamError> {
        let Some(max) = tenant.max_concurrent(key.service) else {
            return Ok(None);
        };
        let slots = {
            let mut all = self.slots.lock();
            match all.get(key) {
                Some((cap, slots)) if *cap == max => slots.clone(),
                _ => {
                    let slots = Arc::new(Semaphore::new(
                        usize::try_from(max.max(1)).unwrap_or(usize::MAX),
                    ));
                    all.insert(key.clone(), (max, slots.clone()));
                    slots
                }
            }
        };
        match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Some(slot)),
            Ok(Err(_)) | Err(_) => {
                self.metrics.quota_refusal(QuotaRefusal::TenantInFlight);
                Err(UpstreamError::Throttled {
                    service: key.service,
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// Forgets tenants that left and caps that changed (live reload); calls in flight keep
    /// their old slots.
    pub(super) fn retain(&self, registry: &Registry) {
        self.slots.lock().retain(|key, (cap, _)| {
            registry
                .get(key.tenant.as_str())
                .is_some_and(|tenant| tenant.max_concurrent(key.service) == Some(*cap))
        });
    }
}

/// Who a fetch is for, as far as the in-flight cap is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A caller waits for it: it takes a free slot, or waits in line for one.
    Interactive,
    /// Nobody waits for it (the refresher): it starts only while more than half the slots are
    /// free, so that interactive requests never queue behind background work.
    Background,
}

/// Layer 2.3: the global cap on calls (and token requests) in flight.
pub struct InFlightCap {
    /// The slots; never closed.
    slots: Arc<Semaphore>,
    /// Their number, for reporting.
    max: usize,
    /// Where refusals are counted.
    metrics: Arc<Metrics>,
}

impl InFlightCap {
    /// A cap of `max` calls at once (at least one).
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            metrics,
        }
    }

    /// Takes a slot for a call to `service`, waiting until `deadline` at most.
    pub(super) async fn acquire(
        &self,
        service: UpstreamService,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, UpstreamError> {
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            // The semaphore is never closed; treat it like a deadline to stay total.
            Ok(Err(_)) | Err(_) => {
                self.metrics.quota_refusal(QuotaRefusal::InFlight);
                Err(UpstreamError::Timeout { service })
            }
        }
    }

    /// Whether work of `priority` may start now: interactive work always (it waits for a slot
    /// if need be), background work only while more than half the slots are free.
    pub fn admits(&self, priority: Priority) -> bool {
        match priority {
            Priority::Interactive => true,
            Priority::Background => self.spare() > self.max / 2,
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Slots free now.
    pub fn spare(&self) -> usize {
        self.slots.available_permits()
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}
