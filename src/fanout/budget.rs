//! How many tenants the `/scores` answers being built may hold at once, across every request:
//! the bound on the memory of many big answers under concurrency.
//!
//! A `/scores` answer holds one item per matching tenant until it is paged, then its page until
//! it is rendered: a few megabytes over 10,000 tenants. Without a bound, 200 concurrent callers
//! held 200 of them at once (RSS 210 MB → 711 MB). With it, an answer first reserves one unit
//! per matching tenant (at most the whole budget) and keeps the reservation until its page is
//! rendered; the others queue for their turn in arrival order. Two cores build only so many
//! answers at once anyway, so queueing costs a big answer little latency, and small answers
//! (one tenant, one unit) are hardly ever held.
//!
//! It knows nothing of what an item holds nor of HTTP; the API keeps the reservation while it
//! renders.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Tenants the answers being built hold at once, at most: four answers over 10,000 tenants.
pub const ANSWER_BUDGET: usize = 40_000;

/// The budget every `/scores` answer reserves its tenants from.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    /// One permit per tenant held.
    units: Arc<Semaphore>,
    /// The whole budget: an answer over more tenants reserves all of it.
    size: u32,
}

/// An answer's share of the budget, given back when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Reservation(Option<Arc<OwnedSemaphorePermit>>);

impl Reservation {
    /// A reservation of nothing (for answers built outside the budget, and tests).
    pub fn none() -> Self {
        Self(None)
    }

    /// Units reserved.
    pub fn units(&self) -> usize {
        self.0.as_ref().map_or(0, |permit| permit.num_permits())
    }
}

impl Default for AnswerBudget {
    fn default() -> Self {
        Self::new(ANSWER_BUDGET)
    }
}

impl AnswerBudget {
    /// A budget of `size` tenants (at least one).
    pub fn new(size: usize) -> Self {
        let size = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
        Self {
            units: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// Waits for room for an answer over `tenants` tenants (at least one unit, at most the
    /// whole budget), in arrival order. The caller bounds the wait.
    pub async fn reserve(&self, tenants: usize) -> Reservation {
        let units = u32::try_from(tenants)
            .unwrap_or(u32::MAX)
            .clamp(1, self.size);
        match self.units.clone().acquire_many_owned(units).await {
            Ok(permit) => Reservation(Some(Arc::new(permit))),
            // Never closed: the budget owns the semaphore and never closes it.
            Err(_) => Reservation::none(),
        }
    }

    /// Units free now.
    pub fn available(&self) -> usize {
        self.units.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn an_answer_waits_while_the_budget_is_held_and_goes_when_it_is_given_back() {
        let budget = AnswerBudget::new(25_000);
        let first = budget.reserve(10_000).await;
        let second = budget.reserve(10_000).await;
        assert_eq!((first.units(), second.units()), (10_000, 10_000));
        // A third answer over 10,000 tenants does not fit in the 5,000 left: it waits.
        let mut third = Box::pin(budget.reserve(10_000));
        assert!((&mut third).now_or_never().is_none());
        // Nor does a small one pass it: answers go in arrival order.
        let mut small = Box::pin(budget.reserve(1));
        assert!((&mut small).now_or_never().is_none());
        // The page being rendered still holds its reservation (a clone).
        let rendering = first.clone();
        drop(first);
        assert!((&mut third).now_or_never().is_none());
        drop(rendering);
        let third = third.now_or_never().expect("room now");
        assert_eq!(third.units(), 10_000);
        assert_eq!(small.now_or_never().expect("room now").units(), 1);
    }

    #[tokio::test]
    async fn an_answer_over_more_tenants_than_the_budget_reserves_all_of_it() {
        let budget = AnswerBudget::new(100);
        let big = budget.reserve(1_000_000).await;
        assert_eq!((big.units(), budget.available()), (100, 0));
        assert!(budget.reserve(0).now_or_never().is_none());
        drop(big);
        assert_eq!(budget.reserve(0).await.units(), 1, "at least one unit");
    }
}
