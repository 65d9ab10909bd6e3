//! Counters of what each tenant's "Microsoft" received and answered, in total and per tenant.
//!
//! These are what the gateway's tests assert on (token requests, Defender calls, answers by
//! class, quota refusals, concurrency), so every count has one precise meaning, documented on
//! [`Counters`]. Lock-free: plain atomics indexed by tenant.

use super::tenants::Directory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one tenant (or all of them) received. Response counters count score-call answers only;
/// token endpoint outcomes are `tokens_issued` and `token_errors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests to the token endpoint (any outcome).
    pub token_requests: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// Token requests refused (any AADSTS error).
    pub token_errors: u64,
    /// `GET /api/configurationScore` requests (any outcome, including hanging ones).
    pub score_calls: u64,
    /// Score calls answered 2xx (including the `malformed` profile's broken bodies).
    pub responses_2xx: u64,
    /// Score calls answered 4xx other than 429.
    pub responses_4xx: u64,
    /// Score calls answered 429 (quota or the `throttled` profile).
    pub responses_429: u64,
    /// Score calls answered 5xx.
    pub responses_5xx: u64,
    /// 429s because the quota was spent (not the `throttled` profile's).
    pub quota_refusals: u64,
    /// Score calls being processed now.
    pub in_flight: u64,
    /// Highest number of score calls in flight at once since start or the last reset.
    pub max_concurrent: u64,
}

/// Counters in total and per tenant (by slug), as `GET /_emulator/stats` returns them. Tenants
/// that received nothing are left out, so that ten thousand idle tenants cost nothing: use
/// [`StatsSnapshot::tenant`] to read one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Every request, including those naming no known tenant.
    pub total: Counters,
    /// Per tenant slug; only tenants with at least one non-zero counter.
    pub tenants: BTreeMap<String, Counters>,
}

impl StatsSnapshot {
    /// One tenant's counters (all zero if it received nothing).
    pub fn tenant(&self, slug: &str) -> Counters {
        self.tenants.get(slug).copied().unwrap_or_default()
    }
}

/// Atomic twin of [`Counters`].
#[derive(Default)]
struct AtomicCounters {
    token_requests: AtomicU64,
    tokens_issued: AtomicU64,
    token_errors: AtomicU64,
    score_calls: AtomicU64,
    responses_2xx: AtomicU64,
    responses_4xx: AtomicU64,
    responses_429: AtomicU64,
    responses_5xx: AtomicU64,
    quota_refusals: AtomicU64,
    in_flight: AtomicU64,
    max_concurrent: AtomicU64,
}

impl AtomicCounters {
    fn load(&self) -> Counters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counters {
            token_requests: get(&self.token_requests),
            tokens_issued: get(&self.tokens_issued),
            token_errors: get(&self.token_errors),
            score_calls: get(&self.score_calls),
            responses_2xx: get(&self.responses_2xx),
            responses_4xx: get(&self.responses_4xx),
            responses_429: get(&self.responses_429),
            responses_5xx: get(&self.responses_5xx),
            quota_refusals: get(&self.quota_refusals),
            in_flight: get(&self.in_flight),
            max_concurrent: get(&self.max_concurrent),
        }
    }

    fn reset(&self) {
        for counter in [
            &self.token_requests,
            &self.tokens_issued,
            &self.token_errors,
            &self.score_calls,
            &self.responses_2xx,
            &self.responses_4xx,
            &self.responses_429,
            &self.responses_5xx,
            &self.quota_refusals,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        // The gauge stays; the high-water mark restarts from it.
        self.max_concurrent
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn enter(&self) {
        self.score_calls.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_concurrent.fetch_max(now, Ordering::Relaxed);
    }

    fn leave(&self) {
        // Saturating: a reset never touches the gauge, so this cannot underflow in practice.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn response(&self, status: u16) {
        let counter = match status {
            200..=299 => &self.responses_2xx,
            429 => &self.responses_429,
            400..=499 => &self.responses_4xx,
            500..=599 => &self.responses_5xx,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// All counters of one emulator.
pub(crate) struct Stats {
    total: AtomicCounters,
    tenants: Vec<AtomicCounters>,
}

impl Stats {
    /// Zeroed counters for `tenants` tenants.
    pub fn new(tenants: usize) -> Self {
        Self {
            total: AtomicCounters::default(),
            tenants: (0..tenants).map(|_| AtomicCounters::default()).collect(),
        }
    }

    fn each(&self, tenant: Option<usize>) -> impl Iterator<Item = &AtomicCounters> {
        std::iter::once(&self.total).chain(tenant.and_then(|index| self.tenants.get(index)))
    }

    /// A token request arrived (`tenant` if the path named a known one).
    pub fn token_request(&self, tenant: Option<usize>) {
        for counters in self.each(tenant) {
            counters.token_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A token request ended: issued or refused.
    pub fn token_outcome(&self, tenant: Option<usize>, issued: bool) {
        for counters in self.each(tenant) {
            let counter = if issued {
                &counters.tokens_issued
            } else {
                &counters.token_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A score call arrived: counts it and holds the in-flight gauge until the guard drops
    /// (answered, or cancelled because the client went away or the server stopped).
    pub fn score_call(&self) -> InFlight<'_> {
        self.total.enter();
        InFlight {
            stats: self,
            tenant: None,
        }
    }

    /// A score call was refused because its quota is spent.
    pub fn quota_refusal(&self, tenant: usize) {
        for counters in self.each(Some(tenant)) {
            counters.quota_refusals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Zeroes every counter except the in-flight gauge.
    pub fn reset(&self) {
        self.total.reset();
        for counters in &self.tenants {
            counters.reset();
        }
    }

    /// A consistent-enough copy (each counter is read once; no global lock).
    pub fn snapshot(&self, directory: &Directory) -> StatsSnapshot {
        let tenants = self
            .tenants
            .iter()
            .zip(&directory.tenants)
            .map(|(counters, tenant)| (tenant.slug.clone(), counters.load()))
            .filter(|(_, counters)| *counters != Counters::default())
            .collect();
        StatsSnapshot {
            total: self.total.load(),
            tenants,
        }
    }
}

/// Holds one score call in the in-flight gauges; releases them on drop.
pub(crate) struct InFlight<'a> {
    stats: &'a Stats,
    tenant: Option<usize>,
}

impl InFlight<'_> {
    /// The call's token named `tenant`: count it there too.
    pub fn attach(&mut self, tenant: usize) {
        if self.tenant.is_none() {
            if let Some(counters) = self.stats.tenants.get(tenant) {
                counters.enter();
                self.tenant = Some(tenant);
            }
        }
    }

    /// Records the answer's status class.
    pub fn respond(&self, status: u16) {
        for counters in self.stats.each(self.tenant) {
            counters.response(status);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        for counters in self.stats.each(self.tenant) {
            counters.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_guard_counts_and_releases() {
        let stats = Stats::new(2);
        {
            let mut first = stats.score_call();
            first.attach(1);
            let second = stats.score_call();
            second.respond(401);
            first.respond(200);
            let total = stats.total.load();
            assert_eq!(total.in_flight, 2);
            assert_eq!(total.max_concurrent, 2);
            assert_eq!(stats.tenants[1].load().in_flight, 1);
        }
        let total = stats.total.load();
        assert_eq!(total.in_flight, 0);
        assert_eq!(total.score_calls, 2);
        assert_eq!((total.responses_2xx, total.responses_4xx), (1, 1));
        let tenant = stats.tenants[1].load();
        assert_eq!((tenant.score_calls, tenant.responses_2xx), (1, 1));
        stats.reset();
        assert_eq!(stats.total.load(), Counters::default());
    }
}
