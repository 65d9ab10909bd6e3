//! `GET /tenants/{id}/controls` and `GET /controls`: the queries they accept, the thin handlers,
//! JSON or CSV. The logic is in [`crate::service`] (one tenant), [`crate::fanout`] (across
//! tenants) and [`crate::controls`] (filters, sorts, summaries).

mod views;

pub use views::{ControlList, ControlRow, ControlView, FailedTenantView, TenantControls};

use super::auth::Caller;
use super::error::{score_code, ApiError, Problem};
use super::scores::{accepts_csv, cursor_owner, next_link, FormatView, ItemErrorView};
use super::views::SourceView;
use crate::controls::{list, Category, ControlFilter, ControlSort, State, Status};
use crate::fanout::{ControlsQuery, RawControlsQuery};
use crate::model::rfc3339;
use crate::service::Services;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::time::Duration;
use utoipa::IntoParams;

/// Query of `GET /tenants/{id}/controls`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantControlsQuery {
    /// Only this category: `identity`, `data`, `device` (Defender's `scid_*` checks among
    /// them), `apps` or `infrastructure`.
    #[param(value_type = Option<Category>)]
    pub category: Option<String>,
    /// Only this status: `done`, `partial` or `todo`.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Only this state: `default`, `ignored`, `third_party` or `reviewed`.
    #[param(value_type = Option<State>)]
    pub state: Option<String>,
    /// Only this service (`AzureAD`, `MDO`, `MDATP`, …; any case).
    pub service: Option<String>,
    /// Order: `rank` (default: Microsoft's most important first), `-points_to_gain` (most
    /// points to gain first) or `id`.
    #[param(value_type = Option<ControlSort>, example = "-points_to_gain")]
    pub sort: Option<String>,
    /// Accept no score older than this many seconds; `0` fetches the score and the control
    /// profiles again (within the tenant's quota).
    #[param(minimum = 0, example = 60)]
    pub max_age: Option<i64>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    #[param(value_type = Option<FormatView>)]
    pub format: Option<String>,
}

/// Query of `GET /controls`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ControlListQuery {
    /// Only these tenants (repeatable). Unknown ids match nothing.
    #[serde(default)]
    pub tenant: Vec<String>,
    /// Only tenants with any of these tags (repeatable).
    #[serde(default)]
    pub tag: Vec<String>,
    /// Only this category.
    #[param(value_type = Option<Category>)]
    pub category: Option<String>,
    /// Only controls that at least one tenant has in this status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Order: `-points_to_gain` (default), `rank` or `id`; ties by id.
    #[param(value_type = Option<ControlSort>, example = "rank")]
    pub sort: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filters and order.
    pub cursor: Option<String>,
    /// How long to wait for slow tenants, 1 to 60000 ms (default 5000); those not done by then
    /// are in `failed` with code `deadline_exceeded`.
    #[param(minimum = 1, maximum = 60000, example = 2000)]
    pub timeout_ms: Option<i64>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    #[param(value_type = Option<FormatView>)]
    pub format: Option<String>,
}

/// A closed-set query parameter: absent, or one of `ALL` spelled as the API spells it; else a
/// 400 naming the parameter and the accepted values.
fn closed<T: Copy + std::fmt::Display>(
    name: &str,
    value: Option<&str>,
    all: &[T],
) -> Result<Option<T>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    all.iter()
        .copied()
        .find(|item| item.to_string() == value)
        .map(Some)
        .ok_or_else(|| {
            let known: Vec<String> = all.iter().map(ToString::to_string).collect();
            ApiError::InvalidRequest(format!(
                "bad query: {name} must be one of {}, not {:?}",
                known.join(", "),
                value.chars().take(64).collect::<String>()
            ))
        })
}

fn sort(value: Option<&str>) -> Result<Option<ControlSort>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    ControlSort::parse(value).map(Some).ok_or_else(|| {
        let known: Vec<&str> = ControlSort::ALL.iter().map(|sort| sort.as_str()).collect();
        ApiError::InvalidRequest(format!(
            "bad query: sort must be one of {}, not {:?}",
            known.join(", "),
            value.chars().take(64).collect::<String>()
        ))
    })
}

/// Whether to answer CSV: `format=csv`, or no `format` and `Accept: text/csv`.
fn wants_csv(request: &HttpRequest, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "bad query: format must be one of json, csv, not {:?}",
            other.chars().take(64).collect::<String>()
        ))),
        None => Ok(accepts_csv(request)),
    }
}

/// A tenant's Microsoft Secure Score controls: what to fix.
///
/// The controls of the tenant's newest Secure Score snapshot joined with its control profiles
/// (title, maximum, rank, state, what to do), with the snapshot's score. The score is served as
/// `GET /tenants/{id}/score?metric=secure` serves it (`max_age`, `source`); profiles are asked
/// of Microsoft at most once per `[upstream] control_profiles_refresh_hours` (default 24), and
/// again on `max_age=0`. Needs the tenant's `secure` metric.
#[utoipa::path(
    get, path = "/tenants/{id}/controls", tag = "controls",
    params(("id" = String, Path, description = "The gateway's tenant id", example = "contoso"), TenantControlsQuery),
    responses(
        (status = 200, description = "The controls",
         content((TenantControls = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Bad query: an unknown `category`, `status`, `state`, `sort` or `format`, a negative `max_age` (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (`unknown_tenant`), or the tenant does not have the `secure` metric (`metric_not_enabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Microsoft refused the credentials (`upstream_auth`) or Microsoft Graph failed (`upstream_error`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Microsoft Graph throttles this tenant or its quota is spent (`upstream_throttled`); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "No answer in time (`upstream_timeout`, `deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_tenant_controls(
    request: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let params: TenantControlsQuery = super::handlers::query(&request)?;
    let filter = ControlFilter {
        category: closed("category", params.category.as_deref(), Category::ALL)?,
        status: closed("status", params.status.as_deref(), Status::ALL)?,
        state: closed("state", params.state.as_deref(), State::ALL)?,
        service: params.service.clone(),
    };
    let order = sort(params.sort.as_deref())?.unwrap_or_default();
    let max_age = match params.max_age {
        Some(seconds) => Some(Duration::from_secs(u64::try_from(seconds).map_err(
            |_| {
                ApiError::InvalidRequest(format!(
                    "bad query: max_age must be 0 or more seconds, not {seconds}"
                ))
            },
        )?)),
        None => None,
    };
    let csv = wants_csv(&request, params.format.as_deref())?;
    let work = async {
        services
            .tenant_controls(&path, &caller.scope, max_age)
            .await
            .map_err(|error| ApiError::from_service(error).for_tenant(&path))
    };
    let (tenant, served, joined) = super::handlers::within_request_timeout(&services, work).await?;
    let controls = list(&joined.controls, &filter, order)
        .into_iter()
        .map(|control| ControlView::new(control, &tenant.tenant_id));
    if csv {
        let id = tenant.id.to_string();
        return super::scores::csv_response(
            &views::TENANT_CONTROLS_CSV,
            controls.map(|control| views::tenant_control_row(&id, control)),
        );
    }
    let snapshot = &joined.snapshot;
    let age = snapshot.fetched_at.elapsed().unwrap_or_default();
    Ok(HttpResponse::Ok().json(TenantControls {
        tenant: tenant.id.to_string(),
        time: snapshot.time.to_string(),
        fetched_at: rfc3339(snapshot.fetched_at),
        age_seconds: age.as_secs(),
        source: SourceView::from(served.source),
        score: snapshot.score,
        max_score: snapshot.max_score,
        controls: controls.collect(),
    }))
}

/// Secure Score controls across tenants: which control to roll out next.
///
/// One row per control over the tenants the caller may see that have the `secure` metric
/// (tenants without it are not counted): how many have it done, partial, to do, ignored or
/// resolved by a third party, the points all could still gain, and the tenants still to do.
/// Every matching tenant is asked at once as in `GET /scores` (same deadline, `timeout_ms`);
/// tenants that fail or are not done in time are listed in `failed` and `complete` is `false`.
/// The next page is `next_cursor`, and the `Link: <…>; rel="next"` header gives its URL.
#[utoipa::path(
    get, path = "/controls", tag = "controls", params(ControlListQuery),
    responses(
        (status = 200, description = "The controls across tenants (see `complete` and `failed`)",
         content((ControlList = "application/json"), (String = "text/csv")),
         headers(("Link" = String, description = "`<…>; rel=\"next\"` (RFC 8288): the URL of the next page; absent on the last page"))),
        (status = 400, description = "Bad query, e.g. `limit=0`, an unknown `sort`, `category` or `status`, or a cursor of another query or API key (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_controls(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let params: ControlListQuery = super::handlers::query(&request)?;
    let raw = RawControlsQuery {
        tenants: params.tenant,
        tags: params.tag,
        category: closed("category", params.category.as_deref(), Category::ALL)?,
        status: closed("status", params.status.as_deref(), Status::ALL)?,
        sort: sort(params.sort.as_deref())?,
        limit: params.limit,
        cursor: params.cursor,
        timeout_ms: params.timeout_ms,
    };
    let csv = wants_csv(&request, params.format.as_deref())?;
    let query = ControlsQuery::parse(raw, services.cursors(), &cursor_owner(&caller))
        .map_err(|error| ApiError::InvalidRequest(format!("bad query: {error}")))?;
    let registry = services.registry();
    let visible = |tenant: &crate::tenants::Tenant| caller.scope.allows(tenant);
    let work = async {
        Ok(services
            .portfolio_controls(&registry, visible, &query)
            .await)
    };
    let page = super::handlers::within_request_timeout(&services, work).await?;
    let mut response = HttpResponse::Ok();
    if let Some(cursor) = &page.next_cursor {
        response.insert_header((
            header::LINK,
            next_link("/controls", request.query_string(), cursor),
        ));
    }
    let rows = page.rows.iter().map(ControlRow::from);
    if csv {
        let mut answer = super::scores::csv_response(
            &views::CONTROL_LIST_CSV,
            rows.map(views::control_list_row),
        )?;
        if let Some(link) = response.finish().headers().get(header::LINK) {
            answer.headers_mut().insert(header::LINK, link.clone());
        }
        return Ok(answer);
    }
    let failed = page
        .failed
        .iter()
        .map(|failed| {
            let code = score_code(&failed.error);
            FailedTenantView {
                tenant: failed.tenant.id.to_string(),
                error: ItemErrorView {
                    code,
                    status: code.status(),
                    detail: failed.error.to_string(),
                },
            }
        })
        .collect();
    Ok(response.json(ControlList {
        generated_at: rfc3339(page.generated_at),
        complete: page.complete,
        tenants: page.tenants,
        controls: rows.collect(),
        failed,
        next_cursor: page.next_cursor.clone(),
    }))
}
