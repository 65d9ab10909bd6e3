//! What callers receive: the JSON shapes of the API. Their doc comments are the OpenAPI
//! descriptions, written for the people who build MSP portals and scripts against scoregate.

use crate::cache::{LastFetch, Served, Source};
use crate::code::Code;
/// RFC 3339 UTC with whole seconds (`2026-11-29T10:00:00Z`): how every instant is written,
/// `fetched_at` of the score body included.
pub use crate::model::rfc3339;
use crate::model::{Metric, Reading};
use crate::tenants::{Cloud, Geo, Tenant};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A tenant registration as callers see it. Credentials are never shown.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "contoso", "name": "Contoso Ltd", "tenant_id": "8f2c4e1a-1b2c-4d5e-8f90-123456789abc",
    "cloud": "commercial", "geo": "eu", "tags": ["gold"], "metrics": ["device", "secure"]
}))]
pub struct TenantView {
    /// The gateway's id of the tenant, used in routes.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The Entra (Azure AD) tenant id.
    pub tenant_id: String,
    /// The Microsoft cloud the tenant lives in.
    pub cloud: Cloud,
    /// The Defender geo API host used, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// Labels to filter on.
    pub tags: Vec<String>,
    /// The metrics the tenant has (`metric=` of the score routes).
    pub metrics: Vec<Metric>,
}

impl From<&Tenant> for TenantView {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.to_string(),
            name: tenant.name.clone(),
            tenant_id: tenant.tenant_id.clone(),
            cloud: tenant.cloud,
            geo: tenant.geo,
            tags: tenant.tags.clone(),
            metrics: tenant.metrics().to_vec(),
        }
    }
}

/// The list of tenants the caller may see, sorted by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    /// The tenants.
    pub tenants: Vec<TenantView>,
}

/// One tenant with the outcome of the last fetch of each of its metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDetail {
    /// The registration.
    #[serde(flatten)]
    pub tenant: TenantView,
    /// The last fetch of the `device` metric (kept for clients of the first release; the same
    /// as `last_fetches.device`); absent until the first one ends or when the tenant has no
    /// `device` metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<LastFetchView>,
    /// The last fetch of each metric, by metric name (`device`, `exposure`, `secure`); a metric
    /// not fetched yet is absent.
    pub last_fetches: BTreeMap<Metric, LastFetchView>,
}

/// The outcome of the last fetch of a tenant's score.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastFetchView {
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// `ok`, or the error code (`upstream_auth`, `upstream_error`, `upstream_throttled`,
    /// `upstream_timeout`, `upstream_gone`).
    pub outcome: String,
    /// What went wrong, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<LastFetch> for LastFetchView {
    fn from(last: LastFetch) -> Self {
        let (outcome, detail) = match &last.error {
            None => ("ok".to_owned(), None),
            Some(error) => (error.code().as_str().to_owned(), Some(error.to_string())),
        };
        Self {
            at: rfc3339(last.at),
            outcome,
            detail,
        }
    }
}

/// Where a score came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceView {
    /// Fetched from the metric's source (Defender or Microsoft Graph) for this request.
    Upstream,
    /// From the cache, within the fresh window.
    Cache,
    /// Older than the fresh window: served while a refresh runs, or because the refresh failed
    /// (then `warning` says why).
    Stale,
}

impl From<Source> for SourceView {
    fn from(source: Source) -> Self {
        match source {
            Source::Upstream => SourceView::Upstream,
            Source::Cache => SourceView::Cache,
            Source::Stale => SourceView::Stale,
        }
    }
}

/// Why a stale score is served instead of a new one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WarningView {
    /// The error code of the failed refresh (as in the error table).
    pub code: Code,
    /// What went wrong.
    pub detail: String,
}

/// One metric of one tenant: the score body (`score` is the metric's value, see `metric`), how
/// old it is and where it came from.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "tenant": "contoso", "metric": "device", "score": 340.0, "time": "2019-12-03T09:15:58.1665846Z",
    "fetched_at": "2026-11-29T10:00:00Z", "age_seconds": 12, "source": "cache"
}))]
pub struct ScoreView<'a> {
    /// The gateway's id of the tenant.
    pub tenant: &'a str,
    /// Which number `score` is.
    pub metric: Metric,
    /// The score.
    #[serde(flatten)]
    pub reading: &'a Reading,
    /// Seconds since `fetched_at`.
    pub age_seconds: u64,
    /// Where the score came from.
    pub source: SourceView,
    /// Present when a stale score is served because the refresh failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<WarningView>,
}

impl<'a> ScoreView<'a> {
    /// The view of a served `metric` for `tenant`: the one mapping of a served score, which
    /// the items of `/scores` reuse. Borrows: nothing of the reading is copied.
    pub fn new(tenant: &'a Tenant, metric: Metric, served: &'a Served) -> Self {
        Self {
            tenant: tenant.id.as_str(),
            metric,
            reading: served.reading(),
            age_seconds: served.age.as_secs(),
            source: served.source.into(),
            warning: served.warning.as_ref().map(|error| WarningView {
                code: error.code(),
                detail: error.to_string(),
            }),
        }
    }
}

/// The JSON of [`ScoreView::new`]`(tenant, metric, served)`, byte for byte, without building
/// the view: the part fixed for a fetch (`tenant`, `metric`, the reading's fields) rendered
/// once per cached entry ([`Served::rendered`]), the rest (`age_seconds`, `source`, `warning`)
/// appended per request. The warm single-tenant score is served this way.
pub fn score_json(tenant: &Tenant, metric: Metric, served: &Served) -> Vec<u8> {
    use std::io::Write as _;
    /// The fields of [`ScoreView`] before `age_seconds`, in its order.
    #[derive(Serialize)]
    struct Fixed<'a> {
        tenant: &'a str,
        metric: Metric,
        #[serde(flatten)]
        reading: &'a Reading,
    }
    let fixed = served.rendered(|reading| {
        let fixed = Fixed {
            tenant: tenant.id.as_str(),
            metric,
            reading,
        };
        let mut bytes = serde_json::to_vec(&fixed).unwrap_or_default();
        // Open for the fields that follow: the object's closing brace goes.
        bytes.pop();
        bytes
    });
    let view = || ScoreView::new(tenant, metric, served);
    if fixed.is_empty() {
        // Not renderable (serde_json refuses nothing of a reading; kept for safety).
        return serde_json::to_vec(&view()).unwrap_or_default();
    }
    let mut body = Vec::with_capacity(fixed.len() + 48);
    body.extend_from_slice(fixed);
    // Writing into a vector cannot fail.
    let _ = write!(body, ",\"age_seconds\":{}", served.age.as_secs());
    body.extend_from_slice(match served.source {
        Source::Upstream => b",\"source\":\"upstream\"",
        Source::Cache => b",\"source\":\"cache\"",
        Source::Stale => b",\"source\":\"stale\"",
    });
    if let Some(error) = &served.warning {
        let warning = WarningView {
            code: error.code(),
            detail: error.to_string(),
        };
        body.extend_from_slice(b",\"warning\":");
        if serde_json::to_writer(&mut body, &warning).is_err() {
            return serde_json::to_vec(&view()).unwrap_or_default();
        }
    }
    body.push(b'}');
    body
}

/// Query of `GET /tenants`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Only tenants with any of these tags (repeatable: `?tag=gold&tag=silver`).
    #[serde(default)]
    pub tag: Vec<String>,
}

/// Query of `GET /tenants/{id}/score`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScoreQuery {
    /// Which of the tenant's numbers: `device` (default), `exposure` or `secure`. A metric the
    /// tenant does not have is 404 `metric_not_enabled`.
    #[param(value_type = Option<Metric>)]
    pub metric: Option<String>,
    /// Accept nothing older than this many seconds; `0` forces a call to the metric's source
    /// (still within the tenant's quota).
    #[param(minimum = 0, example = 60)]
    pub max_age: Option<i64>,
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`, `ready`, `starting` or `unavailable`.
    pub status: String,
    /// Why not ready, when `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Entry;
    use crate::model::{Categories, Comparison, SecureDetails, UpstreamService};
    use crate::policy::testing::{tenant, DEFENDER_LIMITS};
    use crate::upstream::UpstreamError;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn served(reading: Reading, source: Source, warning: Option<UpstreamError>) -> Served {
        let entry = Arc::new(Entry::new(
            reading,
            tokio::time::Instant::now(),
            Duration::from_secs(300),
        ));
        Served::new(
            entry,
            source,
            Duration::from_secs(12),
            Duration::from_secs(288),
            warning,
        )
    }

    fn device() -> Reading {
        Reading {
            score: 417.97,
            // What a source may write: quotes, a backslash, a line break, non-ASCII.
            time: "2026-12-05T02:17:31.8990515Z \"q\" \\ \n é".to_owned(),
            fetched_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000),
            secure: None,
        }
    }

    fn secure() -> Reading {
        Reading {
            score: 342.5,
            time: "2026-11-29T00:00:00Z".to_owned(),
            fetched_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000),
            secure: Some(SecureDetails {
                max_score: 863.0,
                percentage: SecureDetails::percentage_of(342.5, 863.0),
                categories: Categories {
                    identity: 10.3,
                    ..Categories::default()
                },
                comparisons: vec![Comparison {
                    basis: "AllTenants".to_owned(),
                    average_score: 310.5,
                }],
            }),
        }
    }

    #[tokio::test]
    async fn the_rendered_score_is_the_views_json_byte_for_byte_and_made_once_per_entry() {
        let contoso = tenant("contoso", DEFENDER_LIMITS);
        let failed = UpstreamError::Failed {
            service: UpstreamService::Defender,
            detail: "Defender answered 503 \"busy\"".to_owned(),
        };
        for (metric, reading, source, warning) in [
            (Metric::Device, device(), Source::Cache, None),
            (Metric::Device, device(), Source::Upstream, None),
            (Metric::Secure, secure(), Source::Stale, Some(failed)),
        ] {
            let served = served(reading, source, warning);
            let view = serde_json::to_vec(&ScoreView::new(&contoso, metric, &served)).unwrap();
            assert_eq!(
                String::from_utf8(score_json(&contoso, metric, &served)).unwrap(),
                String::from_utf8(view).unwrap()
            );
        }

        // The fixed part is rendered once per entry: a second serve of the same entry (later,
        // from another source) reuses it and patches only what changes per request.
        let first = served(device(), Source::Upstream, None);
        let body = score_json(&contoso, Metric::Device, &first);
        let mut renders = 0;
        first.rendered(|_| {
            renders += 1;
            Vec::new()
        });
        assert_eq!(renders, 0, "already rendered");
        let mut later = first.clone();
        later.source = Source::Cache;
        later.age = Duration::from_secs(40);
        let again: serde_json::Value =
            serde_json::from_slice(&score_json(&contoso, Metric::Device, &later)).unwrap();
        let before: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (again["age_seconds"].as_u64(), again["source"].as_str()),
            (Some(40), Some("cache"))
        );
        assert_eq!(again["time"], before["time"]);
        assert_eq!(again["score"], before["score"]);
    }
}
