//! The cache's test hooks: faults injected into a tenant's next fetch, and the callers waiting
//! for a flight. Compiled only with the `test-hooks` feature, which no product build turns on
//! (the tests do, through the crate's dev-dependency on itself); without it, [`Faults`] holds
//! nothing and injects nothing.

#[cfg(not(feature = "test-hooks"))]
use super::TenantId;
#[cfg(feature = "test-hooks")]
use super::{Metric, ScoreCache, TenantId};

/// A fault a test can inject into the next fetch of a tenant, to prove that the gateway survives
/// it.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// The fetch task panics.
    Panic,
    /// The fetch task is cancelled (as a runtime that stops cancels it).
    Cancel,
}

/// What the next fetch of a tenant must suffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Injected {
    /// The fetch task panics.
    pub(super) panic: bool,
    /// The fetch task is cancelled before it runs.
    pub(super) cancel: bool,
}

/// Faults injected by tests, each taken by the next fetch of its tenant.
#[derive(Default)]
pub(super) struct Faults {
    #[cfg(feature = "test-hooks")]
    injected: parking_lot::Mutex<std::collections::HashMap<TenantId, InjectedFault>>,
}

impl Faults {
    /// The fault injected into the next fetch of `tenant`, if any (then it is gone).
    #[cfg(feature = "test-hooks")]
    pub(super) fn take(&self, tenant: &TenantId) -> Injected {
        let fault = self.injected.lock().remove(tenant);
        Injected {
            panic: fault == Some(InjectedFault::Panic),
            cancel: fault == Some(InjectedFault::Cancel),
        }
    }

    /// Nothing is ever injected in a product build.
    #[cfg(not(feature = "test-hooks"))]
    pub(super) fn take(&self, _tenant: &TenantId) -> Injected {
        Injected::default()
    }
}

#[cfg(feature = "test-hooks")]
impl ScoreCache {
    /// Makes the next fetch of `tenant` fail with `fault`. For tests only: it proves that one
    /// broken fetch never wedges a tenant.
    pub fn inject_fault(&self, tenant: &TenantId, fault: InjectedFault) {
        self.faults.injected.lock().insert(tenant.clone(), fault);
    }

    /// Callers waiting now for the running fetch of the tenant's `metric` (0 when none runs).
    /// For tests that must act while a request waits, without guessing how long that takes.
    pub async fn flight_waiters(&self, tenant: &TenantId, metric: Metric) -> usize {
        self.flights
            .lock()
            .await
            .get(&self.key(tenant, metric))
            // The map holds one handle of the shared fetch; every waiting caller holds another.
            .and_then(|(_, flight)| flight.strong_count())
            .map_or(0, |handles| handles.saturating_sub(1))
    }
}
