//! `scoregate check-tenants` and `scoregate consent-url` without the command line: for each
//! tenant and enabled metric of a configuration, one token and one real score call through the
//! gateway's own outbound stack, and a [`Finding`] that says what is wrong and what to do.
//!
//! The calls go through the same pieces `serve` builds (the shared HTTPS client, the token
//! source, the score sources, the policy stack with its quotas): a check is a fetch like any
//! other, within Microsoft's limits (one token per tenant and API, one call per metric, one more
//! after a 401 renews the token). Retries are off, so a check never costs more than that.
//! It keeps no state and starts no background work. Its quota windows are this process's own:
//! a running gateway's calls are not counted, and the few calls of a check (at most two per
//! tenant and metric) stay far below Microsoft's limits per app and tenant.
//!
//! What a failure means is `diagnosis`'s business, how findings are printed `report`'s, the
//! admin-consent URL `consent`'s.
//!
//! Tokens and secrets are never printed: details come from the token source and the sources,
//! which strip them (and Entra's GUIDs).

mod consent;
mod diagnosis;
mod report;
#[cfg(test)]
mod tests;

pub use consent::admin_consent_url;
pub use diagnosis::{CheckCode, Diagnosis};
pub use report::{render_json, render_text};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::Metric;
use crate::policy::{Deadlines, Outbound, Parts, Retries};
use crate::quota::{FailureBackoff, LocalQuotaStore};
use crate::tenants::{Registry, Tenant};
use crate::token::TokenSource;
use crate::upstream::{self, Transport};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// What to check: tenants and metrics named on the command line (none named: all of them).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Gateway ids or Entra tenant ids; empty means every tenant.
    pub tenants: Vec<String>,
    /// Metrics; empty means each tenant's enabled ones.
    pub metrics: Vec<Metric>,
}

/// Why a selection names nothing that can be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// No tenant has this gateway id or Entra tenant id.
    #[error("no tenant {0:?} in the configuration (give its `id` or its `tenant_id`)")]
    UnknownTenant(String),
    /// None of the selected tenants has this metric enabled.
    #[error("no selected tenant has the metric {0} in its `metrics`")]
    MetricNotEnabled(Metric),
    /// The configuration registers no tenant.
    #[error("the configuration registers no tenant")]
    NoTenant,
}

/// The tenant of `registry` with gateway id `wanted`, or else the first with Entra tenant id
/// `wanted` (case-insensitive: GUIDs are stored lower case).
pub fn find_tenant<'r>(registry: &'r Registry, wanted: &str) -> Option<&'r Arc<Tenant>> {
    registry.get(wanted).or_else(|| {
        registry
            .all()
            .iter()
            .find(|tenant| tenant.tenant_id.eq_ignore_ascii_case(wanted.trim()))
    })
}

/// The (tenant, metric) pairs to check, in registry order then [`Metric::ALL`] order.
pub fn plan(
    registry: &Registry,
    selection: &Selection,
) -> Result<Vec<(Arc<Tenant>, Metric)>, SelectionError> {
    if registry.is_empty() {
        return Err(SelectionError::NoTenant);
    }
    let mut tenants: Vec<Arc<Tenant>> = Vec::new();
    if selection.tenants.is_empty() {
        tenants.extend(registry.all().iter().cloned());
    } else {
        for wanted in &selection.tenants {
            let tenant = find_tenant(registry, wanted)
                .ok_or_else(|| SelectionError::UnknownTenant(wanted.clone()))?;
            if !tenants.iter().any(|known| Arc::ptr_eq(known, tenant)) {
                tenants.push(tenant.clone());
            }
        }
    }
    for metric in &selection.metrics {
        if !tenants.iter().any(|tenant| tenant.has(*metric)) {
            return Err(SelectionError::MetricNotEnabled(*metric));
        }
    }
    Ok(tenants
        .iter()
        .flat_map(|tenant| {
            tenant
                .metrics()
                .iter()
                .filter(|metric| selection.metrics.is_empty() || selection.metrics.contains(metric))
                .map(|metric| (tenant.clone(), *metric))
                .collect::<Vec<_>>()
        })
        .collect())
}

/// What the check found for one tenant's metric: the JSON of `check-tenants --format json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The tenant's gateway id.
    pub tenant: String,
    /// The metric checked.
    pub metric: Metric,
    /// Whether a token and a score were had.
    pub ok: bool,
    /// `ok`, or the code of what is wrong ([`CheckCode`]).
    pub code: &'static str,
    /// The score (when ok), or what Entra or the API answered, secret-free.
    pub detail: String,
    /// What to do (empty when ok).
    pub advice: String,
    /// The admin-consent URL, when an administrator's consent in the tenant fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_url: Option<String>,
}

impl Finding {
    fn from_diagnosis(tenant: &Tenant, metric: Metric, diagnosis: Diagnosis) -> Self {
        Self {
            tenant: tenant.id.to_string(),
            metric,
            ok: diagnosis.code == CheckCode::Ok,
            code: diagnosis.code.as_str(),
            detail: diagnosis.detail,
            advice: diagnosis.advice,
            consent_url: diagnosis
                .needs_consent
                .then(|| admin_consent_url(tenant, None)),
        }
    }
}

/// Checks at most this many tenants at once (the stack's in-flight cap bounds the calls too).
const TENANTS_AT_ONCE: usize = 16;

/// Checks every planned (tenant, metric): a token for the metric's API, then one score call
/// through the outbound stack. Findings come back in the plan's order.
pub async fn check(
    config: &Config,
    plan: Vec<(Arc<Tenant>, Metric)>,
) -> anyhow::Result<Vec<Finding>> {
    let checker = Checker::build(config)?;
    let findings = futures::stream::iter(plan)
        .map(|(tenant, metric)| {
            let checker = &checker;
            async move { checker.check(&tenant, metric).await }
        })
        .buffered(TENANTS_AT_ONCE)
        .collect()
        .await;
    Ok(findings)
}

/// The outbound stack `serve` fetches through, built from the same pieces, without retries.
struct Checker {
    /// Shared with the stack: a token had here is the one the call uses.
    tokens: TokenSource,
    outbound: Outbound,
    /// Longest a token request or a call may take (`[upstream] timeout_ms`).
    timeout: Duration,
}

impl Checker {
    fn build(config: &Config) -> anyhow::Result<Self> {
        let settings = &config.upstream;
        let http =
            upstream::http_client(settings, config.extra_ca_pem.as_deref()).map_err(|error| {
                anyhow::anyhow!(
                    "cannot build the HTTPS client: {}",
                    crate::telemetry::error_chain(&error)
                )
            })?;
        let transport = Transport {
            http: http.clone(),
            max_body_bytes: settings.max_body_bytes,
        };
        let tokens = TokenSource::new(http);
        let outbound = Outbound::new(Parts {
            sources: upstream::sources::all(&transport),
            tokens: Arc::new(tokens.clone()),
            store: Arc::new(LocalQuotaStore::default()),
            // One call per check: a transient failure is reported, not retried.
            retries: Retries {
                max_retries: 0,
                ..Retries::of(settings)
            },
            max_in_flight: settings.max_in_flight,
            deadlines: Deadlines::of(settings),
            backoff: FailureBackoff::default(),
            metrics: Arc::new(Metrics::new()),
        });
        Ok(Self {
            tokens,
            outbound,
            timeout: Duration::from_millis(settings.timeout_ms),
        })
    }

    async fn check(&self, tenant: &Arc<Tenant>, metric: Metric) -> Finding {
        let diagnosis = self.diagnose(tenant, metric).await;
        Finding::from_diagnosis(tenant, metric, diagnosis)
    }

    async fn diagnose(&self, tenant: &Arc<Tenant>, metric: Metric) -> Diagnosis {
        // The token first, on its own: Entra's AADSTS codes say most of what can be wrong, and
        // the call below then finds it in the cache.
        let scope = tenant
            .endpoint(metric.service())
            .map_or_else(|| Arc::<str>::from(""), |endpoint| endpoint.scope.clone());
        match tokio::time::timeout(self.timeout, self.tokens.token_for(tenant, &scope)).await {
            Err(_) => return diagnosis::token_timed_out(tenant),
            Ok(Err(error)) => return diagnosis::token_refused(tenant, metric, &error),
            Ok(Ok(_)) => {}
        }
        match self
            .outbound
            .fetch(tenant, metric, self.outbound.deadline())
            .await
        {
            Ok(reading) => Diagnosis {
                code: CheckCode::Ok,
                detail: format!("score {} (time {})", reading.score, reading.time),
                advice: String::new(),
                needs_consent: false,
            },
            Err(error) => diagnosis::fetch_failed(tenant, metric, &error),
        }
    }
}
