//! Upstream rate limits: calls per (application, tenant) in sliding windows on the emulator's
//! clock (Defender: a minute and an hour; Graph: a minute and ten minutes), and Graph's cap on
//! concurrent requests per (application, tenant).
//!
//! Owns the windows, the in-flight slots and the `Retry-After` arithmetic. A refused call does
//! not consume quota. Tenants (and applications within a tenant) are independent. Which service
//! uses which instance is the handlers' business: one [`Quota`] per upstream service.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::Duration;
use uuid::Uuid;

/// A minute, in milliseconds.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Ten minutes, in milliseconds (Graph's second window).
pub(crate) const TEN_MINUTES_MS: i64 = 600_000;
/// An hour, in milliseconds.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Accepted calls (emulated milliseconds, ascending) of one application in one tenant.
type Window = (Uuid, VecDeque<i64>);

/// The quota of every (application, tenant) of one upstream service.
pub(crate) struct Quota {
    /// (calls allowed, window length in ms), only the limits that are set.
    limits: Vec<(usize, i64)>,
    /// The longest window: how long an accepted call is remembered.
    horizon_ms: i64,
    /// Per tenant index, the windows of the applications that called it (usually one). One
    /// mutex per tenant: contention only between calls of the same tenant.
    windows: Vec<Mutex<Vec<Window>>>,
}

impl Quota {
    /// Defender's shape: limits per minute and per hour for `tenants` tenants; `None` means
    /// unlimited.
    pub fn new(tenants: usize, per_minute: Option<u32>, per_hour: Option<u32>) -> Self {
        Self::with_windows(tenants, &[(per_minute, MINUTE_MS), (per_hour, HOUR_MS)])
    }

    /// Any sliding windows: `(limit, window_ms)` pairs, a `None` limit being no limit.
    pub fn with_windows(tenants: usize, limits: &[(Option<u32>, i64)]) -> Self {
        let limits: Vec<(usize, i64)> = limits
            .iter()
            .filter_map(|(limit, window_ms)| limit.map(|limit| (limit as usize, *window_ms)))
            // `validate` refuses zero limits; dropping them here keeps the arithmetic panic-free.
            .filter(|(limit, window_ms)| *limit > 0 && *window_ms > 0)
            .collect();
        let horizon_ms = limits.iter().map(|(_, window)| *window).max().unwrap_or(0);
        Self {
            limits,
            horizon_ms,
            windows: (0..tenants).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Takes one call's slot at `now_ms`, or says how long until one frees
    /// (whole seconds, at least 1: what `Retry-After` carries).
    pub fn try_acquire(&self, tenant: usize, app: Uuid, now_ms: i64) -> Result<(), Duration> {
        if self.limits.is_empty() {
            return Ok(());
        }
        let Some(cell) = self.windows.get(tenant) else {
            return Ok(());
        };
        // A lock without poisoning: a call that panicked mid-update leaves a valid deque.
        let mut windows = cell.lock();
        let position = match windows.iter().position(|(id, _)| *id == app) {
            Some(position) => position,
            None => {
                windows.push((app, VecDeque::new()));
                windows.len() - 1
            }
        };
        let calls = &mut windows[position].1;

        let horizon = self.horizon_ms;
        while calls.front().is_some_and(|t| *t <= now_ms - horizon) {
            calls.pop_front();
        }

        let mut wait_ms: i64 = 0;
        for &(limit, window_ms) in &self.limits {
            let first_inside = calls.partition_point(|t| *t <= now_ms - window_ms);
            let inside = calls.len() - first_inside;
            if inside >= limit {
                // A slot frees when the oldest of the last `limit` calls leaves the window.
                let oldest_that_matters = calls[calls.len() - limit];
                wait_ms = wait_ms.max(oldest_that_matters + window_ms - now_ms);
            }
        }
        if wait_ms > 0 {
            let seconds = (wait_ms + 999) / 1_000;
            return Err(Duration::from_secs(
                u64::try_from(seconds.max(1)).unwrap_or(1),
            ));
        }
        // Keep the deque sorted even if the system clock stepped back a little.
        let at = calls.back().map_or(now_ms, |last| now_ms.max(*last));
        calls.push_back(at);
        Ok(())
    }
}

/// Requests in flight per (application, tenant), capped (Graph answers 429 beyond its cap).
pub(crate) struct Concurrency {
    /// The cap; `None` means unlimited (slots are still counted, for nothing).
    limit: Option<u32>,
    /// Per tenant index, the applications with requests in flight and how many.
    slots: Vec<Mutex<Vec<(Uuid, u32)>>>,
}

impl Concurrency {
    /// A cap of `limit` concurrent requests per (application, tenant) for `tenants` tenants.
    pub fn new(tenants: usize, limit: Option<u32>) -> Self {
        Self {
            limit,
            slots: (0..tenants).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Takes a slot until the returned guard drops, or `None` when the cap is reached.
    pub fn try_enter(&self, tenant: usize, app: Uuid) -> Option<Slot<'_>> {
        let cell = self.slots.get(tenant)?;
        let mut slots = cell.lock();
        let position = match slots.iter().position(|(id, _)| *id == app) {
            Some(position) => position,
            None => {
                slots.push((app, 0));
                slots.len() - 1
            }
        };
        let busy = &mut slots[position].1;
        if self.limit.is_some_and(|limit| *busy >= limit) {
            return None;
        }
        *busy += 1;
        Some(Slot {
            owner: self,
            tenant,
            app,
        })
    }

    fn leave(&self, tenant: usize, app: Uuid) {
        let Some(cell) = self.slots.get(tenant) else {
            return;
        };
        let mut slots = cell.lock();
        if let Some(position) = slots.iter().position(|(id, _)| *id == app) {
            let busy = &mut slots[position].1;
            *busy = busy.saturating_sub(1);
            if *busy == 0 {
                slots.swap_remove(position);
            }
        }
    }
}

/// One request's concurrency slot, released on drop: answered, or cancelled because the client
/// went away or the server stopped (a hanging call keeps it, as at Graph).
pub(crate) struct Slot<'a> {
    owner: &'a Concurrency,
    tenant: usize,
    app: Uuid,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.owner.leave(self.tenant, self.app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_concurrency_cap_refuses_until_a_slot_is_released() {
        let cap = Concurrency::new(2, Some(2));
        let app = Uuid::nil();
        let first = cap.try_enter(0, app);
        let second = cap.try_enter(0, app);
        assert!(first.is_some() && second.is_some());
        assert!(cap.try_enter(0, app).is_none());
        // Other tenants and other applications have their own slots.
        assert!(cap.try_enter(1, app).is_some());
        assert!(cap.try_enter(0, Uuid::max()).is_some());
        drop(first);
        assert!(cap.try_enter(0, app).is_some());
    }

    #[test]
    fn graph_windows_limit_per_minute_and_per_ten_minutes() {
        let quota = Quota::with_windows(1, &[(Some(2), MINUTE_MS), (Some(3), TEN_MINUTES_MS)]);
        let app = Uuid::nil();
        assert!(quota.try_acquire(0, app, 0).is_ok());
        assert!(quota.try_acquire(0, app, 1).is_ok());
        assert_eq!(quota.try_acquire(0, app, 2), Err(Duration::from_secs(60)));
        assert!(quota.try_acquire(0, app, MINUTE_MS).is_ok());
        assert_eq!(
            quota.try_acquire(0, app, 2 * MINUTE_MS),
            Err(Duration::from_secs(480))
        );
    }

    #[test]
    fn the_minute_limit_refuses_the_next_call_until_a_slot_frees() {
        let quota = Quota::new(2, Some(3), Some(100));
        let app = Uuid::nil();
        for ms in [0, 10, 20] {
            assert!(quota.try_acquire(0, app, ms).is_ok());
        }
        assert_eq!(
            quota.try_acquire(0, app, 30_000),
            Err(Duration::from_secs(30))
        );
        // Refusals do not consume quota, and other tenants are independent.
        assert!(quota.try_acquire(1, app, 30_000).is_ok());
        assert_eq!(
            quota.try_acquire(0, app, 59_999),
            Err(Duration::from_secs(1))
        );
        assert!(quota.try_acquire(0, app, 60_000).is_ok());
    }

    #[test]
    fn the_hour_limit_is_independent_of_the_minute_limit() {
        let quota = Quota::new(1, Some(100), Some(2));
        let app = Uuid::nil();
        assert!(quota.try_acquire(0, app, 0).is_ok());
        assert!(quota.try_acquire(0, app, 120_000).is_ok());
        assert_eq!(
            quota.try_acquire(0, app, 600_000),
            Err(Duration::from_secs(3_000))
        );
        assert!(quota.try_acquire(0, app, HOUR_MS).is_ok());
    }

    #[test]
    fn applications_in_one_tenant_have_their_own_quota() {
        let quota = Quota::new(1, Some(1), None);
        assert!(quota.try_acquire(0, Uuid::nil(), 0).is_ok());
        assert!(quota.try_acquire(0, Uuid::max(), 0).is_ok());
        assert!(quota.try_acquire(0, Uuid::nil(), 1).is_err());
    }

    #[test]
    fn no_limits_means_no_bookkeeping() {
        let quota = Quota::new(1, None, None);
        for ms in 0..1_000 {
            assert!(quota.try_acquire(0, Uuid::nil(), ms).is_ok());
        }
    }
}
