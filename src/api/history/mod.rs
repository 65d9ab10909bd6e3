//! `GET /tenants/{id}/history` and `GET /scores/history` (JSON), `GET /tenants/{id}/history.csv`
//! and `GET /scores/history.csv` (CSV), and one control's history (`controls`): the query they accept, what they answer, and the thin
//! handlers between. The SQL lives in [`crate::history`], the read policies (permits, deadline,
//! the database known away) in [`crate::history::ReadGate`].
//!
//! Scoping is `/scores`': a tenant outside the caller's scope is unknown (404), and the
//! portfolio covers only the tenants the caller may see. Ranges are bounded per interval
//! ([`Interval::max_range_days`]), so that no query grows with the retention.

use super::auth::Caller;
use super::error::{ApiError, Problem};
use super::scores::JsonFormat;
use crate::alerts::AlertError;
use crate::history::{Interval, Metric, Point, PortfolioPoint, DAY};
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Days a history query covers when `from` is not given.
const DEFAULT_DAYS: i64 = 90;

/// Query of `GET /tenants/{id}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantHistoryQuery {
    /// Which score: `device` (default), `exposure` or `secure`.
    #[param(value_type = Option<Metric>)]
    pub metric: Option<String>,
    /// Start (RFC 3339, e.g. `2026-09-01T00:00:00Z`), taken back to the start of its interval;
    /// default 90 days before `to` (31 for `interval=hour`). No earlier than the retention
    /// (`[history] retention_days`), and at most 31 days before `to` for `interval=hour`, 400
    /// for `day`, 1100 for `week`.
    #[param(example = "2026-09-01T00:00:00Z", format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339), included; default now.
    #[param(example = "2026-11-29T00:00:00Z", format = DateTime)]
    pub to: Option<String>,
    /// Bucket width: `hour`, `day` (default) or `week` (ISO weeks, from Monday 00:00 UTC).
    #[param(value_type = Option<Interval>)]
    pub interval: Option<String>,
    /// `json`, the default and the only format documented here. For compatibility `csv` (and
    /// `Accept: text/csv`) is also accepted; the `.csv` operation is the documented CSV one.
    #[param(value_type = Option<JsonFormat>)]
    pub format: Option<String>,
}

/// Query of `GET /scores/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PortfolioHistoryQuery {
    /// Which score: `device` (default), `exposure` or `secure`.
    #[param(value_type = Option<Metric>)]
    pub metric: Option<String>,
    /// Start (RFC 3339), taken back to the start of its interval; default 90 days before `to`
    /// (31 for `interval=hour`). No earlier than the retention, and at most 31 days before `to`
    /// for `interval=hour`, 400 for `day`, 1100 for `week`.
    #[param(example = "2026-09-01T00:00:00Z", format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339), included; default now.
    #[param(example = "2026-11-29T00:00:00Z", format = DateTime)]
    pub to: Option<String>,
    /// Bucket width: `hour`, `day` (default) or `week`.
    #[param(value_type = Option<Interval>)]
    pub interval: Option<String>,
    /// Only these tenants (repeatable). Unknown ids match nothing.
    #[serde(default)]
    pub tenant: Vec<String>,
    /// Only tenants with any of these tags (repeatable).
    #[serde(default)]
    pub tag: Vec<String>,
    /// `json`, the default and the only format documented here. For compatibility `csv` (and
    /// `Accept: text/csv`) is also accepted; the `.csv` operation is the documented CSV one.
    #[param(value_type = Option<JsonFormat>)]
    pub format: Option<String>,
}

/// One tenant's history: one point per interval that has readings, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "tenant": "contoso", "metric": "device", "interval": "day",
    "points": [{"at": "2026-11-28T00:00:00Z", "score": 340.0, "min": 331.0, "max": 340.0, "samples": 24}]
}))]
pub struct TenantHistory {
    /// The gateway's id of the tenant.
    pub tenant: String,
    /// Which score.
    pub metric: Metric,
    /// The bucket width.
    pub interval: Interval,
    /// The points.
    pub points: Vec<Point>,
}

/// The portfolio over time: per interval, statistics over each visible tenant's last score.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "metric": "device", "interval": "day",
    "points": [{"at": "2026-11-28T00:00:00Z", "tenants": 2, "mean": 335.0, "median": 335.0, "min": 330.0, "max": 340.0}]
}))]
pub struct PortfolioHistory {
    /// Which score.
    pub metric: Metric,
    /// The bucket width.
    pub interval: Interval,
    /// The points (intervals without any score are left out).
    pub points: Vec<PortfolioPoint>,
}

/// The 400 of both history routes.
const BAD_QUERY: &str = "Bad query: an unknown `metric` or `interval`, a `from` or `to` that is not RFC 3339, `from` after `to`, a range older than the retention, or longer than the interval allows (31 days by `hour`, 400 by `day`, 1100 by `week`) (`invalid_request`, naming the parameter)";

/// One tenant's score over time.
///
/// At most one point per interval: the last score read in it (`score`), the lowest and highest,
/// and how many readings it holds. The gateway keeps one point per hour for 30 days, then one
/// per day, for `[history] retention_days`. The same answer as CSV is
/// `GET /tenants/{id}/history.csv`; for compatibility this route also answers CSV to
/// `format=csv` or `Accept: text/csv`.
#[utoipa::path(
    get, path = "/tenants/{id}/history", tag = "history",
    params(("id" = String, Path, description = "The gateway's tenant id", example = "contoso"), TenantHistoryQuery),
    responses(
        (status = 200, description = "The points", body = TenantHistory),
        (status = 400, description = BAD_QUERY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (`unknown_tenant`), or history is turned off (`history_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now, or too many history queries run at once (`history_unavailable`, answered at once); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The history query's deadline (20 s) or the server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_tenant_history(
    request: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    tenant_history(&request, &path, &caller, &services, None).await
}

/// One tenant's score over time, as CSV.
///
/// The same answer as `GET /tenants/{id}/history` (same query, without `format`): one RFC 4180
/// row per point after a header row.
#[utoipa::path(
    get, path = "/tenants/{id}/history.csv", tag = "history", operation_id = "get_tenant_history_csv",
    params(("id" = String, Path, description = "The gateway's tenant id", example = "contoso"), TenantHistoryQuery),
    responses(
        (status = 200, description = "The points, one row each",
         content((String = "text/csv", example = "at,score,min,max,samples,max_score\r\n2026-11-28T00:00:00Z,340,331,340,24,\r\n"))),
        (status = 400, description = BAD_QUERY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (`unknown_tenant`), or history is turned off (`history_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now, or too many history queries run at once (`history_unavailable`, answered at once); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The history query's deadline (20 s) or the server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_tenant_history_csv(
    request: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let route = Some("/tenants/{id}/history.csv");
    tenant_history(&request, &path, &caller, &services, route).await
}

/// Both representations of one tenant's history: CSV when `csv_route` (the CSV operation's
/// route) is given, else as the request negotiates.
async fn tenant_history(
    request: &HttpRequest,
    id: &str,
    caller: &Caller,
    services: &Services,
    csv_route: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let (history, _, csv_wanted, range) =
        read_query::<TenantHistoryQuery>(request, services, csv_route)?;
    let tenant = services
        .tenant(id, &caller.scope)
        .map_err(ApiError::from_service)?;
    let work = async {
        let (history, id) = (history.clone(), tenant.id.clone());
        let read = async move {
            history
                .tenant_points(
                    id.as_str(),
                    range.metric,
                    range.from,
                    range.to,
                    range.interval,
                )
                .await
        };
        Ok(services.on_main_runtime(read).await.ok_or_else(|| {
            ApiError::Internal("the history read failed inside the gateway".into())
        })??)
    };
    let points = super::handlers::within_request_timeout(services, work).await?;
    let body = TenantHistory {
        tenant: tenant.id.to_string(),
        metric: range.metric,
        interval: range.interval,
        points,
    };
    answer(csv_wanted, &body, &TENANT_CSV, &body.points, |point| {
        [
            stamp(point.at),
            point.score.to_string(),
            point.min.to_string(),
            point.max.to_string(),
            point.samples.to_string(),
            point.max_score.map(|s| s.to_string()).unwrap_or_default(),
        ]
    })
}

/// The portfolio's score over time.
///
/// Per interval, over the tenants the caller may see (narrowed by `tenant` and `tag`, as on
/// `/scores`): how many have a score in it, and the mean, median, lowest and highest of each
/// one's last score in it. The same answer as CSV is `GET /scores/history.csv`; for
/// compatibility this route also answers CSV to `format=csv` or `Accept: text/csv`.
#[utoipa::path(
    get, path = "/scores/history", tag = "history", params(PortfolioHistoryQuery),
    responses(
        (status = 200, description = "The points", body = PortfolioHistory),
        (status = 400, description = BAD_QUERY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "History is turned off (`history_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now, or too many history queries run at once (`history_unavailable`, answered at once); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The history query's deadline (20 s) or the server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_portfolio_history(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    portfolio_history(&request, &caller, &services, None).await
}

/// The portfolio's score over time, as CSV.
///
/// The same answer as `GET /scores/history` (same query, without `format`): one RFC 4180 row
/// per point after a header row.
#[utoipa::path(
    get, path = "/scores/history.csv", tag = "history", operation_id = "get_portfolio_history_csv",
    params(PortfolioHistoryQuery),
    responses(
        (status = 200, description = "The points, one row each",
         content((String = "text/csv", example = "at,tenants,mean,median,min,max\r\n2026-11-28T00:00:00Z,2,335,335,330,340\r\n"))),
        (status = 400, description = BAD_QUERY, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "History is turned off (`history_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now, or too many history queries run at once (`history_unavailable`, answered at once); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The history query's deadline (20 s) or the server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_portfolio_history_csv(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    portfolio_history(&request, &caller, &services, Some("/scores/history.csv")).await
}

/// Both representations of the portfolio's history, chosen as for [`tenant_history`].
async fn portfolio_history(
    request: &HttpRequest,
    caller: &Caller,
    services: &Services,
    csv_route: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let (history, params, csv_wanted, range) =
        read_query::<PortfolioHistoryQuery>(request, services, csv_route)?;
    // Tenants outside the caller's scope are not matched at all, exactly as on `/scores`.
    let tenants: HashSet<String> = services
        .tenants(&caller.scope)
        .iter()
        .filter(|tenant| {
            params.tenant.is_empty() || params.tenant.iter().any(|id| id == tenant.id.as_str())
        })
        .filter(|tenant| {
            params.tag.is_empty() || tenant.tags.iter().any(|t| params.tag.contains(t))
        })
        .map(|tenant| tenant.id.to_string())
        .collect();
    let work = async {
        Ok(history
            .portfolio(&tenants, range.metric, range.from, range.to, range.interval)
            .await?)
    };
    let points = super::handlers::within_request_timeout(services, work).await?;
    let body = PortfolioHistory {
        metric: range.metric,
        interval: range.interval,
        points,
    };
    answer(csv_wanted, &body, &PORTFOLIO_CSV, &body.points, |point| {
        [
            stamp(point.at),
            point.tenants.to_string(),
            point.mean.to_string(),
            point.median.to_string(),
            point.min.to_string(),
            point.max.to_string(),
        ]
    })
}

/// Runs an alerts read with the history's fail-fast: refused at once while the history
/// database is known to be away, and a failure to reach it marks it away for the next
/// requests (history and alerts share the database); an answer, or a statement the database
/// refused, marks it back (this request may have been the probe). A row this version cannot
/// read (`AlertError::Corrupt`) says nothing of the database: it fails this request only.
pub(super) async fn fail_fast<T>(
    services: &Services,
    work: impl std::future::Future<Output = Result<T, AlertError>>,
) -> Result<T, ApiError> {
    let history = services.history();
    if let Some(history) = history {
        history.reads().check()?;
    }
    let result = tokio::time::timeout(services.request_timeout(), work)
        .await
        .map_err(|_| ApiError::RequestTimeout)?;
    if let Some(history) = history {
        match &result {
            Ok(_) => history.reads().mark_up(),
            Err(
                AlertError::Database(error)
                | AlertError::History(crate::history::HistoryError::Database(error)),
            ) => history.reads().note_failure(error),
            Err(_) => {}
        }
    }
    Ok(result?)
}

/// One representation per operation: `format` belongs to the JSON routes.
fn no_format(format: Option<&str>, route: &str) -> Result<(), ApiError> {
    match format {
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "bad query: `format` is not a parameter of {route}"
        ))),
        None => Ok(()),
    }
}

/// The CSV columns of `/tenants/{id}/history`.
const TENANT_CSV: [&str; 6] = ["at", "score", "min", "max", "samples", "max_score"];
/// The CSV columns of `/scores/history`.
const PORTFOLIO_CSV: [&str; 6] = ["at", "tenants", "mean", "median", "min", "max"];

/// The parameters both history queries share, borrowed from either.
struct Shared<'a> {
    metric: Option<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    interval: Option<&'a str>,
    format: Option<&'a str>,
}

/// A history query: its own parameters plus the [`Shared`] ones.
trait HistoryQuery: serde::de::DeserializeOwned {
    /// The shared parameters, as given.
    fn shared(&self) -> Shared<'_>;
}

/// Both queries name the shared parameters alike, so one impl, written once, serves both.
macro_rules! history_query {
    ($($query:ty),+) => {$(
        impl HistoryQuery for $query {
            fn shared(&self) -> Shared<'_> {
                Shared {
                    metric: self.metric.as_deref(),
                    from: self.from.as_deref(),
                    to: self.to.as_deref(),
                    interval: self.interval.as_deref(),
                    format: self.format.as_deref(),
                }
            }
        }
    )+};
}

history_query!(TenantHistoryQuery, PortfolioHistoryQuery);

/// Reads a history request, in the order both endpoints refuse in: history turned off, the
/// query, `format`, then the range. Gives the history, the query, whether to answer CSV and the
/// validated range. `csv_route` names the CSV operation (which takes no `format`), if it is one.
fn read_query<'s, Q: HistoryQuery>(
    request: &HttpRequest,
    services: &'s Services,
    csv_route: Option<&str>,
) -> Result<(&'s std::sync::Arc<crate::history::History>, Q, bool, Range), ApiError> {
    let history = services.history().ok_or(ApiError::HistoryDisabled)?;
    let params: Q = super::handlers::query(request)?;
    let shared = params.shared();
    let csv_wanted = match csv_route {
        Some(route) => {
            no_format(shared.format, route)?;
            true
        }
        None => wants_csv(request, shared.format)?,
    };
    let range = Range::parse(
        shared.metric,
        shared.from,
        shared.to,
        shared.interval,
        OffsetDateTime::now_utc(),
        history.retention_days(),
    )?;
    Ok((history, params, csv_wanted, range))
}

/// The answer: `body` as JSON, or one CSV `row` per point under `columns` when CSV is wanted.
fn answer<B: Serialize, P, const N: usize>(
    csv_wanted: bool,
    body: &B,
    columns: &[&str; N],
    points: &[P],
    row: impl Fn(&P) -> [String; N],
) -> Result<HttpResponse, ApiError> {
    if csv_wanted {
        return super::scores::csv_response(columns, points.iter().map(row));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Whether to answer CSV: `format` when given (refused, named, when neither `json` nor `csv`),
/// else content negotiation on `Accept`, as on `/scores`.
fn wants_csv(request: &HttpRequest, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "bad query: format: unknown format {other:?}; one of json, csv"
        ))),
        None => Ok(super::scores::accepts_csv(request)),
    }
}

fn stamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A validated history query: metric, interval and an in-retention range.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    metric: Metric,
    interval: Interval,
    from: OffsetDateTime,
    to: OffsetDateTime,
}

impl Range {
    /// Parses the shared parameters; each refusal names its parameter. Defaults: `device`,
    /// `day`, `to` now, `from` 90 days before `to` (shortened to the retention).
    fn parse(
        metric: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        interval: Option<&str>,
        now: OffsetDateTime,
        retention_days: u32,
    ) -> Result<Self, ApiError> {
        let invalid = |detail: String| ApiError::InvalidRequest(format!("bad query: {detail}"));
        let metric = match metric {
            None => Metric::Device,
            Some(name) => Metric::parse(name).ok_or_else(|| {
                invalid(format!(
                    "metric: unknown metric {name:?}; one of {}",
                    Metric::names()
                ))
            })?,
        };
        let interval = match interval {
            None => Interval::Day,
            Some(name) => Interval::parse(name).ok_or_else(|| {
                invalid(format!(
                    "interval: unknown interval {name:?}; one of hour, day, week"
                ))
            })?,
        };
        let time = |key: &str, text: &str| {
            OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                invalid(format!(
                    "{key}: {text:?} is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"
                ))
            })
        };
        let to = match to {
            Some(text) => time("to", text)?,
            None => now,
        };
        let oldest = OffsetDateTime::from_unix_timestamp(crate::history::retention_start(
            now,
            retention_days,
        ))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let longest = time::Duration::days(interval.max_range_days());
        let from = match from {
            Some(text) => {
                let from = time("from", text)?;
                if from < oldest {
                    return Err(invalid(format!(
                        "from: older than the retention of {retention_days} days (the oldest is {})",
                        stamp(oldest)
                    )));
                }
                from
            }
            None => {
                if to < oldest {
                    return Err(invalid(format!(
                        "to: older than the retention of {retention_days} days (the oldest is {})",
                        stamp(oldest)
                    )));
                }
                (to - time::Duration::seconds(DEFAULT_DAYS * DAY))
                    .max(oldest)
                    .max(to - longest)
            }
        };
        if from > to {
            return Err(invalid("from: after to".to_owned()));
        }
        if to - from > longest {
            return Err(invalid(format!(
                "from: interval={} covers at most {} days, and from is {} days before to; ask \
                 a later from, or a wider interval",
                interval.as_str(),
                interval.max_range_days(),
                (to - from).whole_days()
            )));
        }
        Ok(Self {
            metric,
            interval,
            from,
            to,
        })
    }
}

pub(super) mod controls;

#[cfg(test)]
mod tests;
