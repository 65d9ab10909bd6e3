//! `GET /tenants/{id}/controls/{control}/history`: one control's changes in one tenant. Scoped
//! and bounded as the tenant's score history; the SQL lives in [`crate::history`].

use super::{Range, BAD_QUERY};
use crate::api::auth::Caller;
use crate::api::error::{metric_not_enabled_detail, ApiError, Problem};
use crate::history::{valid_control_id, ControlChange, Metric, MAX_CONTROL_ID};
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Query of `GET /tenants/{id}/controls/{control}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ControlHistoryQuery {
    /// Start (RFC 3339); default 90 days before `to`. No earlier than the retention
    /// (`[history] retention_days`), at most 400 days before `to`.
    #[param(example = "2026-09-01T00:00:00Z", format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339), included; default now.
    #[param(example = "2026-11-29T00:00:00Z", format = DateTime)]
    pub to: Option<String>,
}

/// One control's history in one tenant: one point per change, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "tenant": "contoso", "control": "MFARegistrationV2",
    "points": [
        {"at": "2026-09-01T00:00:00Z", "score": 10.0, "max_score": 10.0, "state": "default"},
        {"at": "2026-11-28T09:00:00Z", "score": 4.0, "max_score": 10.0, "state": "default"}
    ]
}))]
pub struct ControlHistory {
    /// The gateway's id of the tenant.
    pub tenant: String,
    /// The control's id.
    pub control: String,
    /// The changes: the values in force at `from` first (stamped when they were first read,
    /// which may be before `from`), then each change up to `to`.
    pub points: Vec<ControlChange>,
}

/// One control's score and state over time, in one tenant.
///
/// The gateway stores a control's values only when its score, maximum or state changes, so
/// each point is a change: the values hold from `at` until the next point. Kept like the
/// score history's day points (`[history] retention_days`); a control unchanged for that long
/// starts again from its next reading.
#[utoipa::path(
    get, path = "/tenants/{id}/controls/{control}/history", tag = "history",
    params(
        ("id" = String, Path, description = "The gateway's tenant id", example = "contoso"),
        ("control" = String, Path, description = "The control's id (letters, digits, `_ - . :`; at most 200 characters)", example = "MFARegistrationV2", pattern = "^[A-Za-z0-9_.:-]{1,200}$"),
        ControlHistoryQuery,
    ),
    responses(
        (status = 200, description = "The changes", body = ControlHistory),
        (status = 400, description = BAD_QUERY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (`unknown_tenant`), the tenant does not have the `secure` metric (`metric_not_enabled`), no history of this control in this tenant (`unknown_control`), or history is turned off (`history_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now, or too many history queries run at once (`history_unavailable`, answered at once); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The history query's deadline (20 s) or the server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_control_history(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let (id, control) = path.into_inner();
    let history = services.history().ok_or(ApiError::HistoryDisabled)?;
    let params: ControlHistoryQuery = crate::api::handlers::query(&request)?;
    if !valid_control_id(&control) {
        return Err(ApiError::InvalidRequest(format!(
            "bad path: control: not a control id (1 to {MAX_CONTROL_ID} letters, digits, `_`, \
             `-`, `.` or `:`)"
        )));
    }
    let range = Range::parse(
        Some(Metric::Secure.as_str()),
        params.from.as_deref(),
        params.to.as_deref(),
        None,
        OffsetDateTime::now_utc(),
        history.retention_days(),
    )?;
    let tenant = services
        .tenant(&id, &caller.scope)
        .map_err(ApiError::from_service)?;
    if !tenant.has(Metric::Secure) {
        return Err(ApiError::MetricNotEnabled {
            tenant: tenant.id.to_string(),
            detail: metric_not_enabled_detail(Metric::Secure, tenant.metrics()),
        });
    }
    let work = async {
        Ok(history
            .control_history(tenant.id.as_str(), &control, range.from, range.to)
            .await?)
    };
    let points = crate::api::handlers::within_request_timeout(&services, work)
        .await?
        .ok_or(ApiError::UnknownControl)?;
    Ok(HttpResponse::Ok().json(ControlHistory {
        tenant: tenant.id.to_string(),
        control,
        points,
    }))
}
