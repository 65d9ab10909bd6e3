//! Counters of what each tenant's "Microsoft" received and answered, in total and per tenant.
//!
//! These are what the gateway's tests assert on (token requests per audience, calls per
//! endpoint and service, answers by class, quota refusals, concurrency), so every count has one
//! precise meaning, documented on [`Counters`]. Lock-free: plain atomics indexed by tenant.

use super::service::{Endpoint, Service};
use super::tenants::Directory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares [`Counters`] and its atomic twin from one list, so a counter cannot be added to one
/// and forgotten in the other (or in `load` / `reset`). Gauges are never zeroed by a reset.
macro_rules! counters {
    (
        counters { $( $(#[doc = $doc:expr])* $name:ident, )* }
        gauges { $( $(#[doc = $gauge_doc:expr])* $gauge:ident, )* }
    ) => {
        /// What one tenant (or all of them) received, per upstream service.
        ///
        /// Token counters cover the token endpoint; `defender_*` / `graph_*` token counters
        /// split them by the audience the request's `scope` named (a request naming no known
        /// audience is in neither). The unprefixed answer counters (`responses_*`,
        /// `quota_refusals`, `in_flight`, `max_concurrent`) are **Defender's**, over both of
        /// its score endpoints; Graph's have the `graph_` prefix.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Counters {
            $( $(#[doc = $doc])* #[serde(default)] pub $name: u64, )*
            $( $(#[doc = $gauge_doc])* #[serde(default)] pub $gauge: u64, )*
        }

        /// Atomic twin of [`Counters`].
        #[derive(Default)]
        struct AtomicCounters {
            $( $name: AtomicU64, )*
            $( $gauge: AtomicU64, )*
        }

        impl AtomicCounters {
            fn load(&self) -> Counters {
                Counters {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                    $( $gauge: self.$gauge.load(Ordering::Relaxed), )*
                }
            }

            /// Zeroes the counters, not the gauges.
            fn zero_counters(&self) {
                $( self.$name.store(0, Ordering::Relaxed); )*
            }
        }
    };
}

counters! {
    counters {
        /// Requests to the token endpoint (any outcome, any audience).
        token_requests,
        /// Access tokens issued (any audience).
        tokens_issued,
        /// Token requests refused (any AADSTS error).
        token_errors,
        /// Token requests whose scope named Defender's resource (any outcome).
        defender_token_requests,
        /// Access tokens issued for Defender's resource.
        defender_tokens_issued,
        /// Token requests whose scope named Graph's resource (any outcome).
        graph_token_requests,
        /// Access tokens issued for Graph's resource.
        graph_tokens_issued,
        /// `GET /api/configurationScore` requests (the device score; any outcome, including
        /// hanging ones).
        score_calls,
        /// `GET /api/exposureScore` requests (any outcome).
        exposure_calls,
        /// Requests to either Defender score endpoint: `score_calls + exposure_calls`, what
        /// Defender's quota counts.
        defender_calls,
        /// Defender calls answered 2xx (including the `malformed` profile's broken bodies).
        responses_2xx,
        /// Defender calls answered 4xx other than 429.
        responses_4xx,
        /// Defender calls answered 429 (quota or the `throttled` profile).
        responses_429,
        /// Defender calls answered 5xx.
        responses_5xx,
        /// Defender 429s because the quota was spent (not the `throttled` profile's).
        quota_refusals,
        /// Highest number of Defender calls in flight at once since start or the last reset.
        max_concurrent,
        /// `GET /v1.0/security/secureScores` requests (any outcome).
        graph_calls,
        /// `GET /v1.0/security/secureScoreControlProfiles` requests (any outcome; one per page).
        control_profile_calls,
        /// Graph calls (both endpoints) answered 2xx.
        graph_responses_2xx,
        /// Graph calls (both endpoints) answered 4xx other than 429.
        graph_responses_4xx,
        /// Graph calls (both endpoints) answered 429 (rate limit, concurrency cap or the
        /// `throttled` profile).
        graph_responses_429,
        /// Graph calls (both endpoints) answered 5xx.
        graph_responses_5xx,
        /// Graph 429s because a rate limit or the concurrency cap was hit.
        graph_quota_refusals,
        /// Highest number of Graph calls (both endpoints) in flight at once since start or the
        /// last reset.
        graph_max_concurrent,
    }
    gauges {
        /// Defender calls being processed now.
        in_flight,
        /// Graph calls (both endpoints) being processed now.
        graph_in_flight,
    }
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

impl AtomicCounters {
    fn reset(&self) {
        self.zero_counters();
        // The gauges stay; the high-water marks restart from them.
        for (gauge, mark) in [
            (&self.in_flight, &self.max_concurrent),
            (&self.graph_in_flight, &self.graph_max_concurrent),
        ] {
            mark.store(gauge.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn gauge(&self, service: Service) -> (&AtomicU64, &AtomicU64) {
        match service {
            Service::Defender => (&self.in_flight, &self.max_concurrent),
            Service::Graph => (&self.graph_in_flight, &self.graph_max_concurrent),
        }
    }

    fn enter(&self, endpoint: Endpoint) {
        let calls: &[&AtomicU64] = match endpoint {
            Endpoint::ConfigurationScore => &[&self.score_calls, &self.defender_calls],
            Endpoint::ExposureScore => &[&self.exposure_calls, &self.defender_calls],
            Endpoint::SecureScores => &[&self.graph_calls],
            Endpoint::ControlProfiles => &[&self.control_profile_calls],
        };
        for counter in calls {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let (gauge, mark) = self.gauge(endpoint.service());
        let now = gauge.fetch_add(1, Ordering::Relaxed) + 1;
        mark.fetch_max(now, Ordering::Relaxed);
    }

    fn leave(&self, service: Service) {
        // Saturating: a reset never touches the gauge, so this cannot underflow in practice.
        let _ = self
            .gauge(service)
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn response(&self, service: Service, status: u16) {
        let [ok, client, throttled, server] = match service {
            Service::Defender => [
                &self.responses_2xx,
                &self.responses_4xx,
                &self.responses_429,
                &self.responses_5xx,
            ],
            Service::Graph => [
                &self.graph_responses_2xx,
                &self.graph_responses_4xx,
                &self.graph_responses_429,
                &self.graph_responses_5xx,
            ],
        };
        let counter = match status {
            200..=299 => ok,
            429 => throttled,
            400..=499 => client,
            500..=599 => server,
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

    /// A token request's scope named `audience` (counted whatever the outcome).
    pub fn token_audience(&self, tenant: Option<usize>, audience: Service) {
        for counters in self.each(tenant) {
            let counter = match audience {
                Service::Defender => &counters.defender_token_requests,
                Service::Graph => &counters.graph_token_requests,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A token request ended: issued (for that audience) or refused.
    pub fn token_outcome(&self, tenant: Option<usize>, issued: Option<Service>) {
        for counters in self.each(tenant) {
            let counter = match issued {
                Some(Service::Defender) => {
                    counters
                        .defender_tokens_issued
                        .fetch_add(1, Ordering::Relaxed);
                    &counters.tokens_issued
                }
                Some(Service::Graph) => {
                    counters.graph_tokens_issued.fetch_add(1, Ordering::Relaxed);
                    &counters.tokens_issued
                }
                None => &counters.token_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A score call to `endpoint` arrived: counts it and holds its service's in-flight gauge
    /// until the guard drops (answered, or cancelled because the client went away or the
    /// server stopped).
    pub fn call(&self, endpoint: Endpoint) -> InFlight<'_> {
        self.total.enter(endpoint);
        InFlight {
            stats: self,
            endpoint,
            tenant: None,
        }
    }

    /// A call to `service` was refused because a quota (or Graph's concurrency cap) is spent.
    pub fn quota_refusal(&self, tenant: usize, service: Service) {
        for counters in self.each(Some(tenant)) {
            let counter = match service {
                Service::Defender => &counters.quota_refusals,
                Service::Graph => &counters.graph_quota_refusals,
            };
            counter.fetch_add(1, Ordering::Relaxed);
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
    endpoint: Endpoint,
    tenant: Option<usize>,
}

impl InFlight<'_> {
    /// The call's token named `tenant`: count it there too.
    pub fn attach(&mut self, tenant: usize) {
        if self.tenant.is_none() {
            if let Some(counters) = self.stats.tenants.get(tenant) {
                counters.enter(self.endpoint);
                self.tenant = Some(tenant);
            }
        }
    }

    /// Records the answer's status class.
    pub fn respond(&self, status: u16) {
        let service = self.endpoint.service();
        for counters in self.stats.each(self.tenant) {
            counters.response(service, status);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let service = self.endpoint.service();
        for counters in self.stats.each(self.tenant) {
            counters.leave(service);
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
            let mut first = stats.call(Endpoint::ConfigurationScore);
            first.attach(1);
            let second = stats.call(Endpoint::ConfigurationScore);
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

    #[test]
    fn each_service_has_its_own_calls_answers_and_gauge() {
        let stats = Stats::new(1);
        let mut exposure = stats.call(Endpoint::ExposureScore);
        exposure.attach(0);
        let mut graph = stats.call(Endpoint::SecureScores);
        graph.attach(0);
        exposure.respond(200);
        graph.respond(429);
        let tenant = stats.tenants[0].load();
        assert_eq!(
            (
                tenant.exposure_calls,
                tenant.defender_calls,
                tenant.score_calls
            ),
            (1, 1, 0)
        );
        assert_eq!((tenant.graph_calls, tenant.graph_responses_429), (1, 1));
        assert_eq!((tenant.responses_2xx, tenant.responses_429), (1, 0));
        assert_eq!((tenant.in_flight, tenant.graph_in_flight), (1, 1));
        drop(graph);
        assert_eq!(stats.tenants[0].load().graph_in_flight, 0);
        assert_eq!(stats.tenants[0].load().graph_max_concurrent, 1);

        // Control profiles are Graph calls of their own, answered and held like the others.
        let mut profiles = stats.call(Endpoint::ControlProfiles);
        profiles.attach(0);
        profiles.respond(200);
        let tenant = stats.tenants[0].load();
        assert_eq!((tenant.control_profile_calls, tenant.graph_calls), (1, 1));
        assert_eq!((tenant.graph_responses_2xx, tenant.graph_in_flight), (1, 1));
        drop(profiles);
        assert_eq!(stats.tenants[0].load().graph_in_flight, 0);
    }
}
