//! Defender's rate limits: calls per (application, tenant) in a sliding minute and a sliding
//! hour, on the emulator's clock.
//!
//! Owns the windows and the `Retry-After` arithmetic. A refused call does not consume quota.
//! Tenants (and applications within a tenant) are independent.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Accepted calls (emulated milliseconds, ascending) of one application in one tenant.
type Window = (Uuid, VecDeque<i64>);

/// The quota of every (application, tenant).
pub(crate) struct Quota {
    per_minute: Option<u32>,
    per_hour: Option<u32>,
    /// Per tenant index, the windows of the applications that called it (usually one). One
    /// mutex per tenant: contention only between calls of the same tenant.
    windows: Vec<Mutex<Vec<Window>>>,
}

impl Quota {
    /// Limits for `tenants` tenants; `None` means unlimited.
    pub fn new(tenants: usize, per_minute: Option<u32>, per_hour: Option<u32>) -> Self {
        Self {
            per_minute,
            per_hour,
            windows: (0..tenants).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Takes one call's slot at `now_ms`, or says how long until one frees
    /// (whole seconds, at least 1: what `Retry-After` carries).
    pub fn try_acquire(&self, tenant: usize, app: Uuid, now_ms: i64) -> Result<(), Duration> {
        if self.per_minute.is_none() && self.per_hour.is_none() {
            return Ok(());
        }
        let Some(cell) = self.windows.get(tenant) else {
            return Ok(());
        };
        // A poisoned lock only means another call panicked mid-update; the deque is still valid.
        let mut windows = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let position = match windows.iter().position(|(id, _)| *id == app) {
            Some(position) => position,
            None => {
                windows.push((app, VecDeque::new()));
                windows.len() - 1
            }
        };
        let calls = &mut windows[position].1;

        let horizon = if self.per_hour.is_some() {
            HOUR_MS
        } else {
            MINUTE_MS
        };
        while calls.front().is_some_and(|t| *t <= now_ms - horizon) {
            calls.pop_front();
        }

        let mut wait_ms: i64 = 0;
        for (limit, window_ms) in [(self.per_minute, MINUTE_MS), (self.per_hour, HOUR_MS)] {
            let Some(limit) = limit else { continue };
            let limit = limit as usize;
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

#[cfg(test)]
mod tests {
    use super::*;

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
