//! Prometheus metrics: one registry built once per process, the families every component records
//! into, and the text exposition served at `GET /metrics`, in the Prometheus text format or, when
//! asked for, OpenMetrics ([`Format`]).
//!
//! Owns the metric names, their labels and help texts (`docs/operating/prometheus.md` lists them), and the removal of
//! a tenant's series when a reload drops the tenant. It does not decide *when* something is
//! recorded: each component calls the method naming its event (`upstream_call`, `cache`, …).
//!
//! Labels are closed sets fixed by the code (route templates or `unmatched`, the standard methods
//! or `other`, the statuses the gateway answers, outcome codes): nothing a caller sends can add a
//! label value, so no request can grow the exposition. The one exception is the per-tenant
//! gauges, labelled with the gateway's own tenant id from the configuration — never a secret,
//! token, Entra tenant id or client id. Those gauges reveal which customers exist, which is why
//! `/metrics` requires an operator key.
//!
//! Series that alerts rely on exist from the start with the value 0 (every outcome of a closed
//! set, and each route's success and server-error statuses, see [`Metrics::register_routes`]):
//! a counter born at 1 hides its first event from `increase()` and `rate()`.

mod families;
mod format;
mod outcome;
mod tenant;

pub use families::{AlertMetrics, ClusterMetrics, ClusterUse, HistoryMetrics};
pub use format::Format;
pub use outcome::{
    CacheResult, CallOutcome, QuotaRefusal, ReloadOutcome, FETCH_FAILURES, FETCH_OK,
};

use families::UseLabels;
use outcome::{CallLabels, OutcomeLabels, ServiceLabels};
use tenant::TenantSeries;

use crate::code::Code;
use crate::model::{Metric, UpstreamService};
use crate::tenants::{Registry, TenantId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry as PromRegistry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Labels of an HTTP request counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    /// The route template (`/tenants/{id}/score`) or `unmatched`, never the raw path.
    route: &'static str,
    /// One of [`KNOWN_METHODS`] or `other`.
    method: &'static str,
    status: u16,
}

/// Labels of the HTTP latency histogram (no status: fewer series).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// The `route` label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The methods counted under their own name (RFC 9110's); any other is counted as `other`, so
/// that `curl -X XA1` cannot add a series.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// The `method` label of a request method: itself if it is one of [`KNOWN_METHODS`], else
/// `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}

/// The statuses each route's request counter starts with at 0: success, and every server error
/// the gateway answers (so that the first 5xx of a route shows in `rate()`).
pub const PREREGISTERED_STATUSES: [u16; 5] = [200, 500, 502, 503, 504];

/// Values read from their owners at scrape time rather than tracked event by event.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveValues {
    /// Upstream calls in flight now.
    pub in_flight: usize,
    /// Tenants in a 429 cool-down now.
    pub cooling_down: usize,
    /// Registered tenants now.
    pub tenants: usize,
}

/// Every metric of the gateway, registered once.
pub struct Metrics {
    /// The history writer's families.
    pub history: HistoryMetrics,
    /// The alerts' families.
    pub alerts: AlertMetrics,
    /// The cluster's families (registered by [`Metrics::register_cluster`]).
    pub cluster: ClusterMetrics,
    /// The exposition registry (names, help, units); families below are registered in it.
    registry: PromRegistry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Each registered route's `GET` answered 200 (nearly every request): its counter and
    /// latency series, held, so that recording one looks up no family (a shared lock and a
    /// SipHash of the labels, twice per request). Set by the first [`Metrics::register_routes`].
    routes_ok: OnceLock<HashMap<&'static str, (Counter, Histogram), foldhash::fast::RandomState>>,
    upstream_calls: Family<CallLabels, Counter>,
    upstream_duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    upstream_throttled: Family<ServiceLabels, Counter>,
    upstream_in_flight: Gauge,
    fetches: Family<OutcomeLabels, Counter>,
    token_requests: Family<OutcomeLabels, Counter>,
    cache_requests: Family<OutcomeLabels, Counter>,
    /// `cache_requests`' series of each [`CacheResult`] (in [`CacheResult::ALL`]'s order), held:
    /// a warm `/scores` counts a thousand hits, each without a look-up in the family.
    cache_results: [Counter; 3],
    quota_waits: Counter,
    quota_refusals: Family<OutcomeLabels, Counter>,
    tenants_cooling_down: Gauge,
    tenants: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
    /// The per-tenant series, a collector registered in `registry`.
    tenant_series: Arc<TenantSeries>,
}

/// Latency buckets from 5 ms to about 41 s: gateway answers from cache sit at the bottom, calls
/// to Microsoft in the middle, deadlines at the top.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers `scoregate_cluster_redis_up` and `scoregate_cluster_fallbacks_total`: only a
    /// gateway with `[cluster]` has them (a single process reporting "Redis down" would page
    /// someone for nothing).
    pub fn register_cluster(&mut self) {
        for what in ClusterUse::ALL {
            let _ = self.cluster.fallbacks.get_or_create(&UseLabels {
                r#use: what.as_str(),
            });
        }
        self.registry.register(
            "cluster_redis_up",
            "1 while Redis answers (shared mode), 0 while this replica runs on its own",
            self.cluster.redis_up.clone(),
        );
        self.registry.register(
            "cluster_fallbacks",
            "Uses that ran locally because Redis was unavailable, by use",
            self.cluster.fallbacks.clone(),
        );
    }

    /// Creates and registers every family under the `scoregate_` prefix.
    pub fn new() -> Self {
        let mut registry = PromRegistry::with_prefix("scoregate");
        let metrics = Self {
            registry: PromRegistry::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            routes_ok: OnceLock::new(),
            upstream_calls: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_throttled: Family::default(),
            upstream_in_flight: Gauge::default(),
            fetches: Family::default(),
            token_requests: Family::default(),
            cache_requests: Family::default(),
            cache_results: Default::default(),
            quota_waits: Counter::default(),
            quota_refusals: Family::default(),
            tenants_cooling_down: Gauge::default(),
            tenants: Gauge::default(),
            reloads: Family::default(),
            tenant_series: Arc::default(),
            history: HistoryMetrics::default(),
            alerts: AlertMetrics::default(),
            cluster: ClusterMetrics::default(),
        };
        registry.register(
            "alert_events",
            "Alert transitions, by rule (alert) and type (alert.firing, alert.resolved)",
            metrics.alerts.events.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retried, failed)",
            metrics.alerts.deliveries.clone(),
        );
        registry.register(
            "alert_readings_dropped",
            "Readings and failures not evaluated for alerts: the engine's queue was full",
            metrics.alerts.dropped.clone(),
        );
        registry.register(
            "webhook_outbox_pending",
            "Webhook deliveries waiting in the outbox (pending) now",
            metrics.alerts.outbox_pending.clone(),
        );
        registry.register_with_unit(
            "webhook_outbox_oldest_pending_age",
            "Age of the oldest pending webhook delivery (0 when none)",
            Unit::Seconds,
            metrics.alerts.outbox_oldest_age.clone(),
        );
        for outcome in AlertMetrics::DELIVERY_OUTCOMES {
            let _ = metrics
                .alerts
                .deliveries
                .get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            metrics.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route template and method",
            Unit::Seconds,
            metrics.http_duration.clone(),
        );
        registry.register(
            "upstream_calls",
            "HTTP calls to the sources (retries included), by service (defender, graph) and outcome",
            metrics.upstream_calls.clone(),
        );
        registry.register_with_unit(
            "upstream_call_duration",
            "Duration of one HTTP call to a source, by service (defender, graph) and outcome",
            Unit::Seconds,
            metrics.upstream_duration.clone(),
        );
        registry.register(
            "upstream_throttled",
            "429 answers from a source, by service (each starts a cool-down of the tenant's calls to it)",
            metrics.upstream_throttled.clone(),
        );
        registry.register(
            "upstream_in_flight",
            "HTTP calls to the sources (and their token requests) in flight now",
            metrics.upstream_in_flight.clone(),
        );
        registry.register(
            "fetches",
            "Score fetches (token, calls and retries), by the gateway's error code or ok",
            metrics.fetches.clone(),
        );
        registry.register(
            "token_requests",
            "Bearer tokens asked of the token source (from the credential's cache or Entra ID), by outcome",
            metrics.token_requests.clone(),
        );
        registry.register(
            "cache_requests",
            "Score cache look-ups, by outcome (hit, miss, stale)",
            metrics.cache_requests.clone(),
        );
        registry.register(
            "quota_waits",
            "Upstream calls that waited for a tenant's rate limit before being sent",
            metrics.quota_waits.clone(),
        );
        registry.register(
            "quota_refusals",
            "Upstream calls the quota refused, by reason (cool_down, rate, in_flight)",
            metrics.quota_refusals.clone(),
        );
        registry.register(
            "tenants_cooling_down",
            "Tenants in a cool-down a source imposed (429) now",
            metrics.tenants_cooling_down.clone(),
        );
        registry.register("tenants", "Tenants registered now", metrics.tenants.clone());
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome (ok, invalid)",
            metrics.reloads.clone(),
        );
        registry.register_collector(Box::new(metrics.tenant_series.clone()));
        registry.register(
            "history_written",
            "Readings written to the history database",
            metrics.history.written.clone(),
        );
        registry.register(
            "history_dropped",
            "Readings not kept: the history buffer was full (database slow or unreachable) or the database refused them",
            metrics.history.dropped.clone(),
        );
        registry.register(
            "history_failed_batches",
            "History write transactions that failed (retried with back-off)",
            metrics.history.failed_batches.clone(),
        );
        registry.register(
            "history_pending",
            "Readings waiting to be written to the history database",
            metrics.history.pending.clone(),
        );
        registry.register(
            "history_file_lost",
            "1 when the SQLite history file was deleted or replaced while open (what is written is lost at restart), else 0",
            metrics.history.file_lost.clone(),
        );
        // Closed sets start at 0: alerts on `increase()` see their first event.
        for outcome in ReloadOutcome::ALL {
            let _ = metrics.reloads.get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            });
        }
        for service in UpstreamService::ALL {
            let service = service.as_str();
            for outcome in CallOutcome::ALL {
                let _ = metrics.upstream_calls.get_or_create(&CallLabels {
                    service,
                    outcome: outcome.as_str(),
                });
            }
            let _ = metrics
                .upstream_throttled
                .get_or_create(&ServiceLabels { service });
        }
        let fetch_outcomes = FETCH_FAILURES.iter().map(|code| code.as_str());
        for outcome in std::iter::once(FETCH_OK).chain(fetch_outcomes) {
            let _ = metrics.fetches.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in QuotaRefusal::ALL {
            let _ = metrics.quota_refusals.get_or_create(&OutcomeLabels {
                outcome: reason.as_str(),
            });
        }
        // Creates every outcome's series at 0, and holds them.
        let cache_results = CacheResult::ALL.map(|result| {
            metrics
                .cache_requests
                .get_or_create(&OutcomeLabels {
                    outcome: result.as_str(),
                })
                .clone()
        });
        Self {
            registry,
            cache_results,
            ..metrics
        }
    }

    /// Creates the request counters of `routes` (templates) for `GET` and each of
    /// [`PREREGISTERED_STATUSES`] at 0. Idempotent: each HTTP worker may call it.
    pub fn register_routes(&self, routes: &[&'static str]) {
        for route in routes {
            for status in PREREGISTERED_STATUSES {
                let _ = self.http_requests.get_or_create(&HttpLabels {
                    route,
                    method: "GET",
                    status,
                });
            }
        }
        let _ = self.routes_ok.get_or_init(|| {
            routes
                .iter()
                .map(|&route| {
                    let method = "GET";
                    let count = self.http_requests.get_or_create(&HttpLabels {
                        route,
                        method,
                        status: 200,
                    });
                    let duration = self
                        .http_duration
                        .get_or_create(&RouteLabels { route, method });
                    (route, (count.clone(), duration.clone()))
                })
                .collect()
        });
    }

    /// Records one answered HTTP request. `route` is a route template or [`UNMATCHED_ROUTE`],
    /// chosen by the caller from its closed set of routes; `method` is mapped by
    /// [`method_label`].
    pub fn http_request(&self, route: &'static str, method: &str, status: u16, latency: Duration) {
        let method = method_label(method);
        if method == "GET" && status == 200 {
            if let Some((count, duration)) = self.routes_ok.get().and_then(|held| held.get(route)) {
                count.inc();
                duration.observe(latency.as_secs_f64());
                return;
            }
        }
        self.http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route, method })
            .observe(latency.as_secs_f64());
    }

    /// Records one HTTP call to `service`.
    pub fn upstream_call(&self, service: UpstreamService, outcome: CallOutcome, latency: Duration) {
        let service = service.as_str();
        let labels = CallLabels {
            service,
            outcome: outcome.as_str(),
        };
        self.upstream_calls.get_or_create(&labels).inc();
        self.upstream_duration
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        if outcome == CallOutcome::Throttled {
            self.upstream_throttled
                .get_or_create(&ServiceLabels { service })
                .inc();
        }
    }

    /// Records one finished fetch: `None` for success ([`FETCH_OK`]), else the [`Code`] it
    /// ended with (one of [`FETCH_FAILURES`]).
    pub fn fetch(&self, failure: Option<Code>) {
        let outcome = failure.map_or(FETCH_OK, Code::as_str);
        self.fetches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Records one token acquisition: `ok`, `rejected`, `invalid`, `unavailable` or `timeout`.
    pub fn token_request(&self, outcome: &'static str) {
        self.token_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records one score cache look-up.
    pub fn cache(&self, result: CacheResult) {
        self.cache_results[result.index()].inc();
    }

    /// Records that a call waited for a tenant's rate limit.
    pub fn quota_wait(&self) {
        self.quota_waits.inc();
    }

    /// Records that the quota refused a call.
    pub fn quota_refusal(&self, reason: QuotaRefusal) {
        self.quota_refusals
            .get_or_create(&OutcomeLabels {
                outcome: reason.as_str(),
            })
            .inc();
    }

    /// Records a configuration reload.
    pub fn reload(&self, outcome: ReloadOutcome) {
        self.reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records a successful fetch of the tenant's `metric`: its value, when, and no failures
    /// since.
    pub fn tenant_success(&self, tenant: &TenantId, metric: Metric, score: f64, at: SystemTime) {
        let unix = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        let mut records = self.tenant_series.records.lock();
        let record = records.entry((tenant.clone(), metric)).or_default();
        record.score = Some(score);
        record.last_success = Some(unix);
        record.consecutive_failures = 0;
    }

    /// Records a failed fetch of the tenant's `metric`: `consecutive` failures since its last
    /// success.
    pub fn tenant_failure(&self, tenant: &TenantId, metric: Metric, consecutive: u32) {
        let mut records = self.tenant_series.records.lock();
        records
            .entry((tenant.clone(), metric))
            .or_default()
            .consecutive_failures = i64::from(consecutive);
    }

    /// Removes the per-tenant series of tenants that are not in `registry`, and of metrics a
    /// tenant no longer has (live reload).
    pub fn retain_tenants(&self, registry: &Registry) {
        self.tenant_series.records.lock().retain(|(id, metric), _| {
            registry
                .get(id.as_str())
                .is_some_and(|tenant| tenant.has(*metric))
        });
    }

    /// The exposition in `format` (its content type is [`Format::content_type`]), with `live`
    /// values set first.
    pub fn encode(&self, live: LiveValues, format: Format) -> Result<String, std::fmt::Error> {
        self.tenants_cooling_down
            .set(i64::try_from(live.cooling_down).unwrap_or(i64::MAX));
        self.tenants
            .set(i64::try_from(live.tenants).unwrap_or(i64::MAX));
        self.upstream_in_flight
            .set(i64::try_from(live.in_flight).unwrap_or(i64::MAX));
        let mut text = String::new();
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)?
            }
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
