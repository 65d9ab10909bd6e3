//! Microsoft Graph's secure score (metric `secure`): the source that asks
//! `GET /v1.0/security/secureScores`, and the reading of its answer — snapshots, categories,
//! comparisons, bounded — or of its refusal.

use super::{
    clipped, exchange, refusal, CallFailure, Categories, Comparison, Metric, Reading, ScoreSource,
    SecureDetails, Transport, UpstreamService,
};
use crate::tenants::Tenant;
use crate::token::BearerToken;
use crate::wire::{GraphErrorBody, SecureScores, SECURE_SCORES_PATH};
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};

/// Microsoft Secure Score, `GET {graph_base}/v1.0/security/secureScores?$top=1` with a Graph
/// token (`SecurityEvents.Read.All`): the newest daily snapshot.
pub struct GraphSecureScore {
    /// The shared HTTPS client and the answer size limit.
    transport: Transport,
}

impl GraphSecureScore {
    /// The source over the shared client.
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }
}

#[async_trait::async_trait]
impl ScoreSource for GraphSecureScore {
    fn metric(&self) -> Metric {
        Metric::Secure
    }

    fn service(&self) -> UpstreamService {
        UpstreamService::Graph
    }

    fn scope(&self, tenant: &Tenant) -> std::sync::Arc<str> {
        tenant.sources.graph_scope.clone()
    }

    async fn call(&self, tenant: &Tenant, token: &BearerToken) -> Result<Reading, CallFailure> {
        self.get(tenant, token, 1, read_secure_scores).await
    }

    async fn daily(
        &self,
        tenant: &Tenant,
        token: &BearerToken,
        days: u32,
    ) -> Result<Vec<Reading>, CallFailure> {
        self.get(tenant, token, days, read_secure_snapshots).await
    }
}

impl GraphSecureScore {
    /// `GET secureScores?$top={top}`, its answer read by `read` (see [`read_graph_answer`]).
    async fn get<T>(
        &self,
        tenant: &Tenant,
        token: &BearerToken,
        top: u32,
        read: fn(&[u8]) -> Result<T, CallFailure>,
    ) -> Result<T, CallFailure> {
        // Configuration refuses `secure` without a Graph base; this only guards the type.
        let Some(base) = &tenant.sources.graph_base else {
            return Err(CallFailure::Unusable {
                detail: "no Microsoft Graph base URL is configured for this tenant".to_owned(),
            });
        };
        let mut url = base
            .join(SECURE_SCORES_PATH)
            .map_err(|error| CallFailure::Unusable {
                detail: format!("bad Graph base: {error}"),
            })?;
        url.query_pairs_mut().append_pair("$top", &top.to_string());
        let (status, retry_after, warning, body) =
            exchange(&self.transport, url, token, UpstreamService::Graph).await?;
        read_graph_answer(tenant, status, retry_after, warning, &body, read)
    }
}

/// Reads Graph's answer: the newest snapshot, or the facts of its refusal (logged with Graph's
/// `request-id`, for a support case). A 206 Partial Content (a provider failed) whose body still
/// holds a snapshot is a reading, with the `Warning` logged.
pub(super) fn read_graph_answer<T>(
    tenant: &Tenant,
    status: StatusCode,
    retry_after: Option<Duration>,
    warning: Option<String>,
    body: &[u8],
    read: fn(&[u8]) -> Result<T, CallFailure>,
) -> Result<T, CallFailure> {
    if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
        let reading = read(body);
        if status == StatusCode::PARTIAL_CONTENT && reading.is_ok() {
            tracing::warn!(
                tenant = %tenant.id,
                warning = warning.as_deref().unwrap_or("-"),
                "Microsoft Graph answered 206 Partial Content: serving the snapshot it holds"
            );
        }
        if let Err(CallFailure::Unusable { detail }) = &reading {
            tracing::warn!(tenant = %tenant.id, status = status.as_u16(), "{detail}");
        }
        return reading;
    }
    let error = serde_json::from_slice::<GraphErrorBody>(body)
        .ok()
        .map(|body| body.error);
    let code = error.as_ref().map_or("", |e| e.code.as_str());
    let message = clipped(error.as_ref().map_or("", |e| e.message.as_str()));
    let inner = error.as_ref().and_then(|e| e.inner_error.as_ref());
    let request_id = inner.and_then(|inner| inner.request_id.as_deref());
    let date = inner.and_then(|inner| inner.date.as_deref());
    tracing::warn!(
        tenant = %tenant.id,
        status = status.as_u16(),
        code,
        correlation_id = request_id.unwrap_or("-"),
        date = date.unwrap_or("-"),
        "Microsoft Graph refused the call: {message}"
    );
    Err(refusal(
        tenant,
        UpstreamService::Graph,
        status,
        retry_after,
        code,
        &message,
    ))
}

/// Most comparisons kept of one snapshot: Graph sends a handful (all tenants, similar seats,
/// the industry); the rest of an answer that carries more is not kept or cached.
pub const MAX_COMPARISONS: usize = 16;

/// Longest comparison basis kept, in characters (Graph's are short words).
pub(super) const MAX_BASIS_CHARS: usize = 64;

/// The newest snapshot of a `secureScores` body, with its categories and comparisons.
pub(super) fn read_secure_scores(body: &[u8]) -> Result<Reading, CallFailure> {
    let answer = parse_secure_scores(body)?;
    // Graph lists newest first; `$top=1` asks for that one alone.
    let Some(snapshot) = answer.value.into_iter().next() else {
        return Err(CallFailure::Unusable {
            detail: "Microsoft Graph holds no Secure Score snapshot for this tenant yet".to_owned(),
        });
    };
    snapshot_reading(snapshot)
}

/// Every usable snapshot of a `secureScores` body, newest first (Graph's order); snapshots
/// whose numbers are not finite are left out. An empty list is no error: a new tenant has none.
pub(super) fn read_secure_snapshots(body: &[u8]) -> Result<Vec<Reading>, CallFailure> {
    Ok(parse_secure_scores(body)?
        .value
        .into_iter()
        .filter_map(|snapshot| snapshot_reading(snapshot).ok())
        .collect())
}

/// A `secureScores` body.
pub(super) fn parse_secure_scores(body: &[u8]) -> Result<SecureScores, CallFailure> {
    serde_json::from_slice::<SecureScores>(body).map_err(|error| CallFailure::Unusable {
        detail: format!("Microsoft Graph answered an unusable body: {error}"),
    })
}

/// One snapshot as a reading, with its categories and comparisons.
pub(super) fn snapshot_reading(snapshot: crate::wire::SecureScore) -> Result<Reading, CallFailure> {
    if !snapshot.current_score.is_finite() || !snapshot.max_score.is_finite() {
        return Err(CallFailure::Unusable {
            detail: "Microsoft Graph answered a score that is not a finite number".to_owned(),
        });
    }
    let categories = Categories::sum(
        snapshot
            .control_scores
            .iter()
            .map(|control| (control.control_category.as_str(), control.score)),
    );
    let comparisons = snapshot
        .average_comparative_scores
        .iter()
        .take(MAX_COMPARISONS)
        .filter_map(|average| {
            Some(Comparison {
                basis: average.basis.chars().take(MAX_BASIS_CHARS).collect(),
                average_score: average.average_score.filter(|score| score.is_finite())?,
            })
        })
        .collect();
    Ok(Reading {
        score: snapshot.current_score,
        time: snapshot.created_date_time,
        fetched_at: SystemTime::now(),
        secure: Some(SecureDetails {
            max_score: snapshot.max_score,
            percentage: SecureDetails::percentage_of(snapshot.current_score, snapshot.max_score),
            categories,
            comparisons,
        }),
    })
}
