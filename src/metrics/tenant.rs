//! The per-tenant series (`scoregate_tenant_*`): one record per tenant and metric, written out
//! as gauge families at scrape time, and removed when a reload drops the tenant or the metric.

use crate::model::Metric;
use crate::tenants::TenantId;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::collections::BTreeMap;

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
pub(super) struct TenantSeries {
    pub(super) records: Mutex<BTreeMap<(TenantId, Metric), TenantRecord>>,
}

/// What the per-tenant series say about one tenant's metric.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TenantRecord {
    /// The last value fetched; `None` until a fetch succeeds (no series until then).
    pub(super) score: Option<f64>,
    /// Unix time of the last successful fetch; `None` until one.
    pub(super) last_success: Option<f64>,
    /// Failed fetches since the last success.
    pub(super) consecutive_failures: i64,
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
                "The tenant's last value of the metric its metric label names",
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
