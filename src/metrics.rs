//! Prometheus metrics: one registry built once per process, the families every component records
//! into, and the text exposition served at `GET /metrics`.
//!
//! Owns the metric names, their labels and help texts (the README lists them), and the removal of
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

use crate::code::Code;
use crate::model::{Metric, UpstreamService};
use crate::tenants::{Registry, TenantId};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry as PromRegistry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus prefers).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// How a configuration reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration validated and was applied.
    Ok,
    /// The new configuration was refused; the old one keeps serving.
    Invalid,
}

impl ReloadOutcome {
    const ALL: [Self; 2] = [Self::Ok, Self::Invalid];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
        }
    }
}

/// A bounded outcome code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// An upstream service (its fixed name, [`UpstreamService::as_str`]) and a bounded outcome code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    outcome: &'static str,
}

/// An upstream service, by its fixed name ([`UpstreamService::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: &'static str,
}

/// A tenant's gateway id and one of its metrics, as labels of the per-tenant series.
#[derive(Debug, EncodeLabelSet)]
struct TenantLabels {
    tenant: TenantId,
    metric: &'static str,
}

/// The per-tenant series (`scoregate_tenant_*`): one small record per tenant and metric, written
/// out as three gauge families when scraped.
///
/// Not three prometheus-client `Family`s: each costs a hash table and an allocation per series,
/// about 2.5 MiB at 10,000 tenants for three numbers each (issue 15). Ordered by tenant, so the
/// exposition lists tenants alphabetically; removing a tenant is removing its records.
#[derive(Debug, Default)]
struct TenantSeries {
    records: Mutex<BTreeMap<(TenantId, Metric), TenantRecord>>,
}

/// What the per-tenant series say about one tenant's metric.
#[derive(Debug, Clone, Copy, Default)]
struct TenantRecord {
    /// The last value fetched; `None` until a fetch succeeds (no series until then).
    score: Option<f64>,
    /// Unix time of the last successful fetch; `None` until one.
    last_success: Option<f64>,
    /// Failed fetches since the last success.
    consecutive_failures: i64,
}

impl TenantSeries {
    /// Writes one gauge family: `value` picks each record's value, `None` for no series.
    fn encode_family<N: EncodeGaugeValue>(
        records: &BTreeMap<(TenantId, Metric), TenantRecord>,
        encoder: &mut DescriptorEncoder,
        (name, help, unit): (&str, &str, Option<&Unit>),
        value: impl Fn(&TenantRecord) -> Option<N>,
    ) -> Result<(), std::fmt::Error> {
        // No series, no family: as prometheus-client leaves out an empty `Family`.
        if !records.values().any(|record| value(record).is_some()) {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for ((tenant, metric), record) in records {
            if let Some(value) = value(record) {
                let labels = TenantLabels {
                    tenant: tenant.clone(),
                    metric: metric.as_str(),
                };
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for TenantSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let records = self.records.lock();
        Self::encode_family(
            &records,
            &mut encoder,
            (
                "tenant_score",
                "The tenant's last value of the metric (device, exposure or secure)",
                None,
            ),
            |record| record.score,
        )?;
        Self::encode_family(
            &records,
            &mut encoder,
            (
                "tenant_last_success_timestamp",
                "Unix time of the tenant's last successful fetch",
                Some(&Unit::Seconds),
            ),
            |record| record.last_success,
        )?;
        Self::encode_family(
            &records,
            &mut encoder,
            (
                "tenant_consecutive_failures",
                "Failed fetches of the tenant since its last success",
                None,
            ),
            |record| Some(record.consecutive_failures),
        )
    }
}

impl EncodeLabelValue for TenantId {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// What one HTTP call to a source (Defender or Microsoft Graph) ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// 200 with a usable score.
    Ok,
    /// 200 with a body that is not a score.
    Malformed,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 429.
    Throttled,
    /// 5xx.
    ServerError,
    /// 404 or 410: the endpoint is gone (retired, or not offered in the tenant's cloud).
    Gone,
    /// Any other status.
    OtherStatus,
    /// No answer: connection, TLS or protocol failure.
    Transport,
    /// No answer within the attempt's deadline.
    Timeout,
}

impl CallOutcome {
    const ALL: [Self; 10] = [
        Self::Ok,
        Self::Malformed,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Throttled,
        Self::ServerError,
        Self::Gone,
        Self::OtherStatus,
        Self::Transport,
        Self::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Malformed => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::Gone => "gone",
            Self::OtherStatus => "other_status",
            Self::Transport => "transport",
            Self::Timeout => "timeout",
        }
    }

    /// The outcome of an answer with this HTTP status (`malformed` is decided by the caller).
    pub fn from_status(status: u16) -> Self {
        match status {
            200 => Self::Ok,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            429 => Self::Throttled,
            404 | 410 => Self::Gone,
            500..=599 => Self::ServerError,
            _ => Self::OtherStatus,
        }
    }
}

/// What a score cache look-up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh entry was served.
    Hit,
    /// Nothing servable was cached: the caller waited for a fetch.
    Miss,
    /// A stale entry was served (while revalidating, or covering a failure).
    Stale,
}

impl CacheResult {
    const ALL: [Self; 3] = [Self::Hit, Self::Miss, Self::Stale];

    fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

/// Why the quota refused an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The tenant is in a cool-down its source imposed (429 `Retry-After`).
    CoolDown,
    /// The tenant's per-minute or per-hour limit would only allow a call after the deadline.
    Rate,
    /// No in-flight slot freed up before the deadline.
    InFlight,
    /// The upstream service's cap on one tenant's calls at once (Graph's 4) stayed full until
    /// the deadline.
    TenantInFlight,
}

impl QuotaRefusal {
    const ALL: [Self; 4] = [
        Self::CoolDown,
        Self::Rate,
        Self::InFlight,
        Self::TenantInFlight,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::CoolDown => "cool_down",
            Self::Rate => "rate",
            Self::InFlight => "in_flight",
            Self::TenantInFlight => "tenant_in_flight",
        }
    }
}

/// The `outcome` of a fetch that succeeded; a failed one is its [`Code`].
pub const FETCH_OK: &str = "ok";

/// The codes a score fetch can end with besides [`FETCH_OK`]: an upstream failure's, or the fetch
/// task's own end (panic: `internal`; cancelled by shutdown: `shutting_down`).
pub const FETCH_FAILURES: [Code; 7] = [
    Code::UpstreamAuth,
    Code::UpstreamError,
    Code::UpstreamThrottled,
    Code::UpstreamTimeout,
    Code::UpstreamGone,
    Code::Internal,
    Code::ShuttingDown,
];

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

/// The history writer's counters (`scoregate_history_*`): handed to the writer, which records
/// into them; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct HistoryMetrics {
    /// Readings written to the database.
    pub written: Counter,
    /// Readings dropped: the buffer was full, or the database refused them.
    pub dropped: Counter,
    /// Write transactions that failed (retried with back-off unless refused for their content).
    pub failed_batches: Counter,
    /// Readings waiting to be written.
    pub pending: Gauge,
    /// 1 when the SQLite file was deleted or replaced while open, else 0.
    pub file_lost: Gauge,
}

/// Labels of an alert event counter: the rule's name (from the configuration: a bounded set)
/// and the event type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlertEventLabels {
    alert: String,
    r#type: &'static str,
}

/// The alerts' families (`scoregate_alert_*`, `scoregate_webhook_*`): handed to
/// [`crate::alerts::Alerts`], which records into them; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    events: Family<AlertEventLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    /// Readings and failures the engine's full queue dropped.
    pub dropped: Counter,
    /// Outbox rows pending now.
    pub outbox_pending: Gauge,
    /// Age in seconds of the oldest pending outbox row (0 when none).
    pub outbox_oldest_age: Gauge,
}

impl AlertMetrics {
    /// Delivery outcomes, registered at 0.
    pub const DELIVERY_OUTCOMES: [&'static str; 3] = ["delivered", "retried", "failed"];

    /// Creates the event counters of `alerts` at 0 (at start and on reload).
    pub fn register_alerts<'a>(&self, alerts: impl Iterator<Item = &'a str>) {
        for alert in alerts {
            for kind in ["alert.firing", "alert.resolved"] {
                let _ = self.events.get_or_create(&AlertEventLabels {
                    alert: alert.to_owned(),
                    r#type: kind,
                });
            }
        }
    }

    /// Counts one event (`kind` is `alert.firing` or `alert.resolved`); with `alert` from the
    /// configuration only.
    pub fn event(&self, alert: &str, kind: &'static str) {
        self.events
            .get_or_create(&AlertEventLabels {
                alert: alert.to_owned(),
                r#type: kind,
            })
            .inc();
    }

    /// Counts one attempt's outcome: one of [`Self::DELIVERY_OUTCOMES`].
    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// What fell back to its local half while Redis was unavailable (`[cluster]`): the `use` label
/// of `scoregate_cluster_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterUse {
    /// A score look-up served from the first level only.
    Cache,
    /// A fetch made without the cluster-wide single flight.
    Flight,
    /// A quota charge, cool-down or back-off kept by this replica alone.
    Quota,
    /// A refresh started without a lease.
    Lease,
    /// A caller's request charged to the key's local limiter.
    KeyLimit,
}

impl ClusterUse {
    /// Every use, for series that start at 0.
    pub const ALL: [ClusterUse; 5] = [
        ClusterUse::Cache,
        ClusterUse::Flight,
        ClusterUse::Quota,
        ClusterUse::Lease,
        ClusterUse::KeyLimit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterUse::Cache => "cache",
            ClusterUse::Flight => "flight",
            ClusterUse::Quota => "quota",
            ClusterUse::Lease => "lease",
            ClusterUse::KeyLimit => "key_limit",
        }
    }
}

/// A [`ClusterUse`] as a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UseLabels {
    r#use: &'static str,
}

/// `scoregate_cluster_*`: registered only with `[cluster]`; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    /// 1 while Redis answers, 0 while the replica runs on its own.
    pub redis_up: Gauge,
    /// Uses that ran locally because Redis was unavailable.
    fallbacks: Family<UseLabels, Counter>,
}

impl ClusterMetrics {
    /// Counts one local fallback.
    pub fn fallback(&self, what: ClusterUse) {
        self.fallbacks
            .get_or_create(&UseLabels {
                r#use: what.as_str(),
            })
            .inc();
    }
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
    upstream_calls: Family<CallLabels, Counter>,
    upstream_duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    upstream_throttled: Family<ServiceLabels, Counter>,
    upstream_in_flight: Gauge,
    fetches: Family<OutcomeLabels, Counter>,
    token_requests: Family<OutcomeLabels, Counter>,
    cache_requests: Family<OutcomeLabels, Counter>,
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
            upstream_calls: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_throttled: Family::default(),
            upstream_in_flight: Gauge::default(),
            fetches: Family::default(),
            token_requests: Family::default(),
            cache_requests: Family::default(),
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
        for result in CacheResult::ALL {
            let _ = metrics.cache_requests.get_or_create(&OutcomeLabels {
                outcome: result.as_str(),
            });
        }
        for reason in QuotaRefusal::ALL {
            let _ = metrics.quota_refusals.get_or_create(&OutcomeLabels {
                outcome: reason.as_str(),
            });
        }
        Self {
            registry,
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
    }

    /// Records one answered HTTP request. `route` is a route template or [`UNMATCHED_ROUTE`],
    /// chosen by the caller from its closed set of routes; `method` is mapped by
    /// [`method_label`].
    pub fn http_request(&self, route: &'static str, method: &str, status: u16, latency: Duration) {
        let method = method_label(method);
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
        self.cache_requests
            .get_or_create(&OutcomeLabels {
                outcome: result.as_str(),
            })
            .inc();
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

    /// The exposition in OpenMetrics text format ([`CONTENT_TYPE`]), with `live` values set first.
    pub fn encode(&self, live: LiveValues) -> Result<String, std::fmt::Error> {
        self.tenants_cooling_down
            .set(i64::try_from(live.cooling_down).unwrap_or(i64::MAX));
        self.tenants
            .set(i64::try_from(live.tenants).unwrap_or(i64::MAX));
        self.upstream_in_flight
            .set(i64::try_from(live.in_flight).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::Registry;

    fn id(text: &str) -> TenantId {
        TenantId::parse(text).unwrap()
    }

    #[test]
    fn the_exposition_names_every_family_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.http_request("/tenants/{id}/score", "GET", 200, Duration::from_millis(3));
        metrics.upstream_call(
            UpstreamService::Graph,
            CallOutcome::Throttled,
            Duration::from_millis(30),
        );
        metrics.cache(CacheResult::Hit);
        metrics.tenant_success(
            &id("contoso"),
            Metric::Device,
            340.0,
            UNIX_EPOCH + Duration::from_secs(100),
        );
        let text = metrics.encode(LiveValues::default()).unwrap();
        for line in [
            "scoregate_http_requests_total{route=\"/tenants/{id}/score\",method=\"GET\",status=\"200\"} 1",
            "scoregate_upstream_calls_total{service=\"graph\",outcome=\"throttled\"} 1",
            "scoregate_upstream_calls_total{service=\"defender\",outcome=\"throttled\"} 0",
            "scoregate_upstream_throttled_total{service=\"graph\"} 1",
            "scoregate_upstream_throttled_total{service=\"defender\"} 0",
            "scoregate_cache_requests_total{outcome=\"hit\"} 1",
            "scoregate_tenant_score{tenant=\"contoso\",metric=\"device\"} 340.0",
            "scoregate_tenant_last_success_timestamp_seconds{tenant=\"contoso\",metric=\"device\"} 100.0",
            "scoregate_tenant_consecutive_failures{tenant=\"contoso\",metric=\"device\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("scoregate_http_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        let metrics = Metrics::new();
        for method in ["XA1", "get", "BREW", "GET"] {
            metrics.http_request(UNMATCHED_ROUTE, method, 404, Duration::from_millis(1));
        }
        let text = metrics.encode(LiveValues::default()).unwrap();
        assert!(
            text.contains("scoregate_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 3"),
            "{text}"
        );
        assert!(text.contains("method=\"GET\",status=\"404\"} 1"), "{text}");
        assert!(!text.contains("XA1") && !text.contains("BREW"), "{text}");
    }

    #[test]
    fn alerting_series_exist_at_zero_before_any_event() {
        let metrics = Metrics::new();
        metrics.register_routes(&["/scores"]);
        let text = metrics.encode(LiveValues::default()).unwrap();
        for line in [
            "scoregate_config_reloads_total{outcome=\"ok\"} 0",
            "scoregate_config_reloads_total{outcome=\"invalid\"} 0",
            "scoregate_upstream_calls_total{service=\"defender\",outcome=\"throttled\"} 0",
            "scoregate_upstream_calls_total{service=\"graph\",outcome=\"throttled\"} 0",
            "scoregate_upstream_throttled_total{service=\"defender\"} 0",
            "scoregate_upstream_throttled_total{service=\"graph\"} 0",
            "scoregate_fetches_total{outcome=\"ok\"} 0",
            "scoregate_fetches_total{outcome=\"upstream_auth\"} 0",
            "scoregate_fetches_total{outcome=\"upstream_error\"} 0",
            "scoregate_fetches_total{outcome=\"upstream_throttled\"} 0",
            "scoregate_fetches_total{outcome=\"upstream_timeout\"} 0",
            "scoregate_fetches_total{outcome=\"internal\"} 0",
            "scoregate_fetches_total{outcome=\"shutting_down\"} 0",
            "scoregate_http_requests_total{route=\"/scores\",method=\"GET\",status=\"502\"} 0",
            "scoregate_history_written_total 0",
            "scoregate_history_dropped_total 0",
            "scoregate_history_failed_batches_total 0",
            "scoregate_history_pending 0",
            "scoregate_history_file_lost 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_removed_tenant_loses_its_series_and_others_keep_theirs() {
        let metrics = Metrics::new();
        metrics.tenant_success(&id("contoso"), Metric::Device, 340.0, SystemTime::now());
        metrics.tenant_failure(&id("fabrikam"), Metric::Secure, 3);
        metrics.retain_tenants(&Registry::default());
        let text = metrics.encode(LiveValues::default()).unwrap();
        assert!(!text.contains("contoso"), "{text}");
        assert!(!text.contains("fabrikam"), "{text}");
    }

    #[test]
    fn a_tenant_that_only_failed_has_a_failure_series_and_no_score_and_tenants_come_in_order() {
        let metrics = Metrics::new();
        metrics.tenant_failure(&id("fabrikam"), Metric::Device, 2);
        let text = metrics.encode(LiveValues::default()).unwrap();
        assert!(
            text.contains(
                "scoregate_tenant_consecutive_failures{tenant=\"fabrikam\",metric=\"device\"} 2"
            ),
            "{text}"
        );
        // No value yet: neither the series nor its family (as an empty `Family` is left out).
        assert!(!text.contains("scoregate_tenant_score"), "{text}");
        assert!(!text.contains("tenant_last_success"), "{text}");

        metrics.tenant_success(&id("contoso"), Metric::Device, 340.0, SystemTime::now());
        metrics.tenant_success(&id("fabrikam"), Metric::Device, 410.0, SystemTime::now());
        let text = metrics.encode(LiveValues::default()).unwrap();
        let contoso = text
            .find("scoregate_tenant_score{tenant=\"contoso\"")
            .expect("contoso's score");
        let fabrikam = text
            .find("scoregate_tenant_score{tenant=\"fabrikam\",metric=\"device\"} 410.0")
            .expect("fabrikam's score");
        assert!(contoso < fabrikam, "{text}");
        // A success resets the failures.
        assert!(
            text.contains(
                "scoregate_tenant_consecutive_failures{tenant=\"fabrikam\",metric=\"device\"} 0"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE scoregate_tenant_score gauge").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn a_metric_the_tenant_no_longer_has_loses_its_series() {
        let metrics = Metrics::new();
        // The test tenant has every metric; a registry whose tenant has only `device` drops
        // the `secure` series and keeps the `device` one.
        let mut tenant = crate::policy::testing::registration(
            "tenant-0",
            crate::policy::testing::DEFENDER_LIMITS,
        );
        tenant.sources.metrics = vec![Metric::Device];
        let id = tenant.id.clone();
        metrics.tenant_success(&id, Metric::Device, 340.0, SystemTime::now());
        metrics.tenant_success(&id, Metric::Secure, 420.0, SystemTime::now());
        metrics.retain_tenants(&Registry::new(vec![tenant]));
        let text = metrics.encode(LiveValues::default()).unwrap();
        assert!(
            text.contains("scoregate_tenant_score{tenant=\"tenant-0\",metric=\"device\"} 340.0"),
            "{text}"
        );
        assert!(!text.contains("metric=\"secure\""), "{text}");
    }
}
