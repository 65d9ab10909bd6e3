//! The families handed to the components that record into them themselves: the history
//! writer (`scoregate_history_*`), the alerts (`scoregate_alert_*`, `scoregate_webhook_*`) and
//! the cluster (`scoregate_cluster_*`). [`super::Metrics`] registers them; clones share the series.

use super::outcome::OutcomeLabels;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

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
pub(super) struct AlertEventLabels {
    alert: String,
    r#type: &'static str,
}

/// The alerts' families (`scoregate_alert_*`, `scoregate_webhook_*`): handed to
/// [`crate::alerts::Alerts`], which records into them; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    pub(super) events: Family<AlertEventLabels, Counter>,
    pub(super) deliveries: Family<OutcomeLabels, Counter>,
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
pub(super) struct UseLabels {
    pub(super) r#use: &'static str,
}

/// `scoregate_cluster_*`: registered only with `[cluster]`; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    /// 1 while Redis answers, 0 while the replica runs on its own.
    pub redis_up: Gauge,
    /// Uses that ran locally because Redis was unavailable.
    pub(super) fallbacks: Family<UseLabels, Counter>,
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
