//! `GET /scores`: the query it accepts, the JSON and CSV it answers, and the thin handler between.
//!
//! The logic (matching, concurrent fetch, summary, order, cursors) lives in [`crate::fanout`];
//! this file only parses, calls it once and renders. Per-item errors use the same codes as the
//! single-tenant route ([`super::error::score_code`]).

mod csv_export;

pub(super) use csv_export::csv_response;
use csv_export::to_csv;

use super::auth::Caller;
use super::error::{score_code, ApiError, Problem};
use super::views::{rfc3339, ScoreView, SourceView, WarningView};
use crate::auth::Scope;
use crate::cache::ScoreError;
use crate::code::Code;
use crate::fanout::{self, Item, ItemStatus, Page, RawQuery, SortOrder, Summary};
use crate::model::{Metric, Reading};
use crate::service::Services;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query of `GET /scores` and `GET /scores.csv` (which takes no `format`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScoresQuery {
    /// Which number every item reports: `device` (default), `exposure` or `secure`. Tenants that
    /// do not have it are items with `status: error` and code `metric_not_enabled`. Summary and
    /// `sort` use this metric's values (for `exposure`, lower is better: `sort=score` lists the
    /// best first).
    #[param(value_type = Option<Metric>)]
    pub metric: Option<String>,
    /// Only these tenants (repeatable: `?tenant=contoso&tenant=fabrikam`). Unknown ids match nothing.
    #[serde(default)]
    pub tenant: Vec<String>,
    /// Only tenants with any of these tags (repeatable).
    #[serde(default)]
    pub tag: Vec<String>,
    /// Only items with this status.
    pub status: Option<ItemStatus>,
    /// Order of the items: `tenant` (default), `name`, `score` or `-score`, or a change:
    /// `change_1d`, `change_7d`, `change_30d`, `change_90d` (the biggest drops first) and
    /// `-change_1d` … `-change_90d` (the biggest gains first). Items without a score (or a
    /// change) come last, ties are broken by tenant id.
    #[param(example = "-score")]
    pub sort: Option<SortOrder>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filters and order.
    pub cursor: Option<String>,
    /// Accept nothing older than this many seconds; `0` forces calls to the metric's source
    /// (within each tenant's quota).
    #[param(minimum = 0, example = 60)]
    pub max_age: Option<i64>,
    /// How long to wait for slow tenants, 1 to 60000 ms (default 5000). Tenants not done by then
    /// are reported with code `deadline_exceeded`; their fetch goes on and fills the cache.
    #[param(minimum = 1, maximum = 60000, example = 2000)]
    pub timeout_ms: Option<i64>,
    /// `json`, the default and the only format documented here. For compatibility `csv` (and
    /// `Accept: text/csv`) is also accepted; `GET /scores.csv` is the documented CSV operation.
    #[param(value_type = Option<JsonFormat>)]
    pub format: Option<FormatView>,
}

/// The format `GET /scores` documents (CSV is `GET /scores.csv`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
// Only a schema: the query is parsed into `FormatView`, which also takes `csv`.
#[allow(dead_code)]
pub enum JsonFormat {
    /// JSON (`ScoreList`).
    #[serde(rename = "json")]
    Json,
}

/// Response format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatView {
    /// JSON (`ScoreList`).
    Json,
    /// CSV, one row per item.
    Csv,
}

/// The scores of many tenants: one page of items plus a summary of every matching tenant.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "generated_at": "2026-11-29T10:00:12Z", "complete": false, "changes_ready": true,
    "summary": {"tenants": 2, "ok": 1, "stale": 0, "failed": 1,
                "min": 340.0, "max": 340.0, "mean": 340.0, "median": 340.0},
    "items": [
        {"tenant": "contoso", "name": "Contoso", "tags": ["gold"], "status": "ok", "metric": "device", "score": 340.0,
         "time": "2019-12-03T09:15:58.1665846Z", "fetched_at": "2026-11-29T10:00:00Z",
         "age_seconds": 12, "source": "cache",
         "change_1d": 2.0, "change_7d": -12.5, "change_30d": null, "change_90d": null},
        {"tenant": "litware", "name": "Litware", "tags": [], "status": "error", "metric": "device",
         "error": {"code": "upstream_auth", "status": 502, "detail": "Defender refused the call"},
         "change_1d": null, "change_7d": null, "change_30d": null, "change_90d": null}],
    "next_cursor": null
}))]
pub struct ScoreList<'a> {
    /// When the answer was put together (RFC 3339, UTC).
    pub generated_at: String,
    /// `true` when every matching tenant is `ok`; `false` when any is `stale` or `error`.
    /// It says nothing of the changes: see `changes_ready`.
    pub complete: bool,
    /// `true` when the changes (`change_1d` … `change_90d`) were read from the history, so a
    /// `null` change means no score now or no point that old. `false` when they could not be:
    /// the history is off, its database not connected yet or unreachable, today's past scores
    /// still loading just after a start, or slower than `timeout_ms`. Every change is then
    /// `null` because it is unknown, and an order by a change is the order of those nulls (by
    /// tenant id): ask again for the real order.
    pub changes_ready: bool,
    /// Counts and statistics over every matching tenant, not just this page.
    pub summary: Summary,
    /// This page's items, in the requested order.
    pub items: Vec<ScoreItem<'a>>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One tenant's score, or why there is none: the score body (`score`, `time`, `fetched_at`, and
/// for `metric: secure` `max_score`, `percentage`, `categories` and `comparisons`),
/// `age_seconds` and `source` are present together, and absent on errors (then `error` is).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreItem<'a> {
    /// The gateway's id of the tenant.
    pub tenant: &'a str,
    /// Display name.
    pub name: &'a str,
    /// The tenant's tags.
    pub tags: &'a [String],
    /// `ok`, `stale` or `error`.
    pub status: ItemStatus,
    /// Which number `score` is (the query's `metric`).
    pub metric: Metric,
    /// The score, absent on errors.
    #[serde(flatten)]
    #[schema(schema_with = optional_reading_schema)]
    pub reading: Option<&'a Reading>,
    /// Seconds since `fetched_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// Where the score came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceView>,
    /// Present on a stale score served because its refresh failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<WarningView>,
    /// Present when there is no score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemErrorView>,
    /// `score` minus the score at the end of yesterday (UTC), from the history; `null` without
    /// a score now, without a point that old, or when the history is off or unreachable.
    pub change_1d: Option<f64>,
    /// `score` minus the score at the end of the day 7 days ago; `null` as `change_1d`.
    pub change_7d: Option<f64>,
    /// `score` minus the score at the end of the day 30 days ago; `null` as `change_1d`.
    pub change_30d: Option<f64>,
    /// `score` minus the score at the end of the day 90 days ago; `null` as `change_1d`.
    pub change_90d: Option<f64>,
}

/// The schema of [`ScoreItem::reading`]: the score body's properties, none required (an item
/// with an error has none of them).
fn optional_reading_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::model::optional_properties(<Reading as utoipa::PartialSchema>::schema())
}

/// Why an item has no score: the code and status the single-tenant route would have answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemErrorView {
    /// Stable code: `metric_not_enabled`, `upstream_auth`, `upstream_error`,
    /// `upstream_throttled`, `upstream_timeout`, `upstream_gone`, `deadline_exceeded`,
    /// `shutting_down` or `internal`.
    pub code: Code,
    /// The HTTP status `GET /tenants/{id}/score` would have answered.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
}

impl<'a> From<&'a Item> for ScoreItem<'a> {
    fn from(item: &'a Item) -> Self {
        let tenant = &item.tenant;
        let mut view = Self {
            tenant: tenant.id.as_str(),
            name: &tenant.name,
            tags: &tenant.tags,
            status: item.status(),
            metric: item.metric,
            reading: None,
            age_seconds: None,
            source: None,
            warning: None,
            error: None,
            change_1d: item.change(1),
            change_7d: item.change(7),
            change_30d: item.change(30),
            change_90d: item.change(90),
        };
        match &item.outcome {
            Ok(served) => {
                // The single-tenant view is the one mapping of a served score; every field of
                // it is named here so that a new one cannot be forgotten.
                let ScoreView {
                    tenant: _,
                    metric: _,
                    reading,
                    age_seconds,
                    source,
                    warning,
                } = ScoreView::new(tenant, item.metric, served);
                view.reading = Some(reading);
                view.age_seconds = Some(age_seconds);
                view.source = Some(source);
                view.warning = warning;
            }
            Err(error) => {
                let code = score_code(error);
                let detail = match error {
                    ScoreError::Deadline => {
                        format!("{error}; the fetch goes on and will fill the cache")
                    }
                    ScoreError::MetricNotEnabled {
                        metric, enabled, ..
                    } => super::error::metric_not_enabled_detail(*metric, enabled),
                    _ => error.to_string(),
                };
                view.error = Some(ItemErrorView {
                    code,
                    status: code.status(),
                    detail,
                });
            }
        }
        view
    }
}

impl<'a> From<&'a Page> for ScoreList<'a> {
    fn from(page: &'a Page) -> Self {
        Self {
            generated_at: rfc3339(page.generated_at),
            complete: page.complete,
            changes_ready: page.changes_ready,
            summary: page.summary.clone(),
            items: page.items.iter().map(ScoreItem::from).collect(),
            next_cursor: page.next_cursor.clone(),
        }
    }
}

/// The scores of many tenants.
///
/// Every matching tenant is fetched concurrently (from the cache when fresh); one slow or broken
/// tenant never fails the answer: it gets `status: error` with the code the single-tenant route
/// would have answered, and `complete` turns `false`. No tenant is waited for past `timeout_ms`.
/// The `summary` covers every matching tenant; `items` are one page (`limit`, `cursor`); the
/// next page is `next_cursor`, and the `Link: <…>; rel="next"` header gives its whole URL.
///
/// This operation is documented as JSON. The same answer as CSV is `GET /scores.csv`; for
/// compatibility `/scores` also answers CSV to `format=csv` or `Accept: text/csv`.
#[utoipa::path(
    get, path = "/scores", tag = "tenants", params(ScoresQuery),
    responses(
        (status = 200, description = "The scores (per-item status; see `complete`)", body = ScoreList,
         headers(("Link" = String, description = "`<…>; rel=\"next\"` (RFC 8288): the URL of the next page (this query with the new `cursor`); absent on the last page"))),
        (status = 400, description = "Bad query, e.g. `limit=0`, an unknown `sort`, or a cursor of another query or API key (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_scores(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let params: ScoresQuery = super::handlers::query(&request)?;
    let csv = match params.format {
        Some(format) => format == FormatView::Csv,
        None => accepts_csv(&request),
    };
    answer(&request, &caller, &services, params, csv, "/scores").await
}

/// The scores of many tenants, as CSV.
///
/// The same answer as `GET /scores` (same query, without `format`), one RFC 4180 row per item
/// after a header row. The summary is not included; the next page is in the `Link` header
/// (`rel="next"`): follow it until it is absent to get every row exactly once.
#[utoipa::path(
    get, path = "/scores.csv", tag = "tenants", operation_id = "list_scores_csv",
    params(ScoresQuery),
    responses(
        (status = 200, description = "The scores, one row per item",
         content(
            (String = "text/csv", example = "tenant,name,tags,status,score,time,fetched_at,age_seconds,source,error_code,error_detail,metric,max_score,percentage,category_identity,category_data,category_device,category_apps,category_infrastructure,change_1d,change_7d,change_30d,change_90d\r\ncontoso,Contoso,gold,ok,340,2019-12-03T09:15:58.1665846Z,2026-11-29T10:00:00Z,12,cache,,,device,,,,,,,,2,-12.5,,\r\n"),
         ),
         headers(("Link" = String, description = "`<…>; rel=\"next\"` (RFC 8288): the URL of the next page (this query with the new `cursor`); absent on the last page"))),
        (status = 400, description = "Bad query, e.g. `limit=0`, an unknown `sort`, or a cursor of another query or API key (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_scores_csv(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let params: ScoresQuery = super::handlers::query(&request)?;
    if params.format.is_some() {
        // One representation per operation: `format` belongs to `/scores`.
        return Err(ApiError::InvalidRequest(
            "bad query: `format` is not a parameter of /scores.csv".to_owned(),
        ));
    }
    answer(&request, &caller, &services, params, true, "/scores.csv").await
}

/// Both representations: parse, fan out once, render, link the next page.
async fn answer(
    request: &HttpRequest,
    caller: &Caller,
    services: &Services,
    params: ScoresQuery,
    csv: bool,
    route: &str,
) -> Result<HttpResponse, ApiError> {
    let raw = RawQuery {
        metric: Some(super::handlers::metric(params.metric.as_deref())?),
        tenants: params.tenant,
        tags: params.tag,
        status: params.status,
        sort: params.sort,
        limit: params.limit,
        cursor: params.cursor,
        max_age: params.max_age,
        timeout_ms: params.timeout_ms,
    };
    let query = fanout::Query::parse(raw, services.cursors(), &cursor_owner(caller))
        .map_err(|error| ApiError::InvalidRequest(error.to_string()))?;
    let registry = services.registry();
    // Tenants outside the caller's scope are not matched at all: not in items, summary or paging.
    let visible = |tenant: &crate::tenants::Tenant| caller.scope.allows(tenant);
    let work = async { Ok(services.scores(&registry, visible, &query).await) };
    let page = super::handlers::within_request_timeout(services, work).await?;
    let list = ScoreList::from(&page);
    let mut response = HttpResponse::Ok();
    if let Some(cursor) = &list.next_cursor {
        response.insert_header((
            header::LINK,
            next_link(route, request.query_string(), cursor),
        ));
    }
    if csv {
        let body = to_csv(&list)
            .map_err(|error| ApiError::Internal(format!("writing the CSV answer: {error}")))?;
        Ok(response
            .content_type("text/csv; charset=utf-8; header=present")
            .body(body))
    } else {
        Ok(response.json(list))
    }
}

/// Who a cursor is for: the key's name and its scope, in a canonical text (sorted), so that a
/// cursor issued to one key is refused for another, or for the same key after its scope changed.
pub(super) fn cursor_owner(caller: &Caller) -> String {
    let scope = match caller.scope.as_ref() {
        Scope::All => serde_json::json!("*"),
        Scope::Some { tenants, tags } => {
            let mut tenants: Vec<&str> = tenants.iter().map(|id| id.as_str()).collect();
            tenants.sort_unstable();
            let mut tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            tags.sort_unstable();
            serde_json::json!([tenants, tags])
        }
    };
    serde_json::json!([caller.name, scope]).to_string()
}

/// `<route?query-with-the-new-cursor>; rel="next"`: the caller's own query (empty values and
/// the old cursor dropped) with `cursor` set, percent-encoded anew so that nothing the caller
/// wrote can break out of the `<…>`.
pub(super) fn next_link(route: &str, query: &str, cursor: &str) -> String {
    let mut next = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "cursor" && !value.is_empty() {
            next.append_pair(&key, &value);
        }
    }
    next.append_pair("cursor", cursor);
    format!("<{route}?{}>; rel=\"next\"", next.finish())
}

/// Whether the caller prefers CSV to JSON (RFC 9110 content negotiation on `Accept`). Each
/// representation takes the quality of the most specific media range that matches it
/// (`text/csv` over `text/*` over `*/*`); CSV is chosen when its quality is above zero and
/// higher than JSON's, or equal with a more specific or an earlier-listed range. No `Accept`, or
/// one that does not parse, means JSON.
pub(super) fn accepts_csv(request: &HttpRequest) -> bool {
    use actix_web::mime::{self, Name};
    use header::{Accept, Header, Quality};
    use std::cmp::Reverse;
    let Ok(accept) = Accept::parse(request) else {
        return false;
    };
    // The range governing `kind/sub`, ranked by (quality, specificity, earliness).
    let governing = |kind: Name<'_>, sub: Name<'_>| {
        accept
            .iter()
            .enumerate()
            .filter_map(|(index, range)| {
                let (range_kind, range_sub) = (range.item.type_(), range.item.subtype());
                let specificity = match (range_kind == kind, range_sub == sub) {
                    (true, true) => 2,
                    (true, false) if range_sub == mime::STAR => 1,
                    _ if range_kind == mime::STAR && range_sub == mime::STAR => 0,
                    _ => return None,
                };
                Some((specificity, Reverse(index), range.quality))
            })
            .max_by_key(|(specificity, earliness, _)| (*specificity, *earliness))
            .map(|(specificity, earliness, quality)| (quality, specificity, earliness))
    };
    let Some(csv) = governing(mime::TEXT, mime::CSV) else {
        return false;
    };
    if csv.0 == Quality::ZERO {
        return false;
    }
    governing(mime::APPLICATION, mime::JSON).is_none_or(|json| csv > json)
}

#[cfg(test)]
mod tests;
