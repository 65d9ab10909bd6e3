//! `GET /alerts`, `GET /alerts/events` and `GET /webhooks/deliveries`: thin handlers over
//! [`crate::alerts::Alerts`].
//!
//! Scoping is `/scores`': a caller sees the alerts and events of the tenants it may see. The
//! outbox names every tenant's events and every endpoint, so `/webhooks/deliveries` is for
//! operator keys only; other keys get the 404 of a route that does not exist (as `/metrics`).

use super::auth::Caller;
use super::error::{ApiError, Problem};
use crate::alerts::{AlertEvent, Delivery, DeliveryStatus, EventFilter, FiringAlert};
use crate::auth::Scope;
use crate::cursor::CursorCodec;
use crate::service::Services;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Default and largest page (as `/scores`).
const DEFAULT_LIMIT: i64 = crate::fanout::DEFAULT_LIMIT;
const MAX_LIMIT: i64 = crate::fanout::MAX_LIMIT;

/// What fires now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"alerts": [{"alert": "device-below-300", "tenant": "contoso", "metric": "device",
    "since": "2026-11-28T09:00:00Z", "value": 287.0, "threshold": 300.0}]}))]
pub struct FiringList {
    /// The (alert, tenant) pairs firing now, by alert then tenant.
    pub alerts: Vec<FiringAlert>,
}

/// Query of `GET /alerts/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-28T00:00:00Z")]
    pub since: Option<String>,
    /// Only events of this alert (rule name).
    pub alert: Option<String>,
    /// Only events of this tenant.
    pub tenant: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filters (and the same API key).
    pub cursor: Option<String>,
}

/// A page of transitions, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// The events.
    pub events: Vec<AlertEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /webhooks/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries with this status.
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<String>,
    /// Deliveries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filter (and the same API key).
    pub cursor: Option<String>,
}

/// A page of outbox rows, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// The deliveries.
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The page size asked for, within `1..=MAX_LIMIT`.
fn limit(asked: Option<i64>) -> Result<usize, ApiError> {
    asked
        .unwrap_or(DEFAULT_LIMIT)
        .try_into()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT.unsigned_abs()).contains(limit))
        .and_then(|limit: u64| usize::try_from(limit).ok())
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "limit: must be a whole number from 1 to {MAX_LIMIT}"
            ))
        })
}

/// The 400 of a cursor that does not open: the same for garbage, an edited cursor, and one
/// issued for other filters or to another key, so that none tells more than the others.
fn foreign_cursor() -> ApiError {
    ApiError::InvalidRequest(
        "cursor: the cursor is invalid, or belongs to another query or another API key".to_owned(),
    )
}

/// The tenants `scope` may see, or `None` for all (also those since removed).
fn visible(services: &Services, scope: &Scope) -> Option<BTreeSet<String>> {
    match scope {
        Scope::All => None,
        scope => Some(
            services
                .tenants(scope)
                .iter()
                .map(|tenant| tenant.id.to_string())
                .collect(),
        ),
    }
}

/// The alerts firing now for the tenants the caller may see.
#[utoipa::path(
    get, path = "/alerts", tag = "alerts",
    responses(
        (status = 200, description = "What fires now", body = FiringList),
        (status = 404, description = "Alerts are off because history is (`alerts_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now (`history_unavailable`); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_firing(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParameters {}
    let _: NoParameters = super::handlers::query(&request)?;
    let alerts = services.alerts().ok_or(ApiError::AlertsDisabled)?;
    let visible = visible(&services, &caller.scope);
    let firing = super::history::fail_fast(&services, alerts.firing(visible.as_ref())).await?;
    Ok(HttpResponse::Ok().json(FiringList { alerts: firing }))
}

/// Alert transitions (`alert.firing`, `alert.resolved`), oldest first, paged.
///
/// The events of the tenants the caller may see. The next page is `next_cursor`, and the
/// `Link: <…>; rel="next"` header gives its whole URL.
#[utoipa::path(
    get, path = "/alerts/events", tag = "alerts", params(EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList,
         headers(("Link" = String, description = "`<…>; rel=\"next\"` (RFC 8288): the next page; absent on the last page"))),
        (status = 400, description = "Bad query: `since` not RFC 3339, `limit` not a whole number from 1 to 1000, a `cursor` that is not one this route issued for these filters and this API key (`invalid_request`, naming the parameter)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Alerts are off because history is (`alerts_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now (`history_unavailable`); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_events(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let params: EventsQuery = super::handlers::query(&request)?;
    let since = params
        .since
        .as_deref()
        .map(|text| {
            OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                ApiError::InvalidRequest(
                    "since: must be an RFC 3339 time (2026-11-28T00:00:00Z)".to_owned(),
                )
            })
        })
        .transpose()?;
    let limit = limit(params.limit)?;
    let codec = services.cursors();
    // The filters as given (the parsed time, so that two spellings of it are one query) and
    // the caller: a cursor pages only the query and the key it was issued for.
    let binding = CursorCodec::binding(&serde_json::json!([
        "alerts/events",
        since.map(OffsetDateTime::unix_timestamp),
        params.alert,
        params.tenant,
        super::scores::cursor_owner(&caller),
    ]));
    let after = params
        .cursor
        .as_deref()
        .map(|cursor| {
            codec
                .decode::<i64>(cursor, &binding)
                .ok_or_else(foreign_cursor)
        })
        .transpose()?;
    let alerts = services.alerts().ok_or(ApiError::AlertsDisabled)?;
    let filter = EventFilter {
        since,
        alert: params.alert,
        tenant: params.tenant,
        visible: visible(&services, &caller.scope).map(|set| set.into_iter().collect()),
        after,
        // One more than asked: whether a next page exists.
        limit: limit + 1,
    };
    let mut events = super::history::fail_fast(&services, alerts.events(&filter)).await?;
    let more = events.len() > limit;
    events.truncate(limit);
    let next_cursor = more
        .then(|| events.last().map(|(seq, _)| codec.encode(seq, &binding)))
        .flatten();
    let mut response = HttpResponse::Ok();
    if let Some(cursor) = &next_cursor {
        response.insert_header((
            header::LINK,
            super::scores::next_link("/alerts/events", request.query_string(), cursor),
        ));
    }
    Ok(response.json(EventList {
        events: events.into_iter().map(|(_, event)| event).collect(),
        next_cursor,
    }))
}

/// The webhook outbox: attempts, last status and error, next attempt (operator keys only;
/// other keys get 404).
#[utoipa::path(
    get, path = "/webhooks/deliveries", tag = "alerts", params(DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryList,
         headers(("Link" = String, description = "`<…>; rel=\"next\"` (RFC 8288): the next page; absent on the last page"))),
        (status = 400, description = "Bad query: an unknown `status`, `limit` not a whole number from 1 to 1000, a `cursor` that is not one this route issued for these filters and this API key (`invalid_request`, naming the parameter)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not an operator key (`not_found`), or alerts are off because history is (`alerts_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history database cannot be reached now (`history_unavailable`); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "The server's request timeout passed (`deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_deliveries(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    if !caller.operator {
        return Err(ApiError::NotFound);
    }
    let params: DeliveriesQuery = super::handlers::query(&request)?;
    let status = params
        .status
        .as_deref()
        .map(|text| {
            DeliveryStatus::parse(text).ok_or_else(|| {
                ApiError::InvalidRequest("status: must be pending, failed or delivered".to_owned())
            })
        })
        .transpose()?;
    let limit = limit(params.limit)?;
    let codec = services.cursors();
    let binding = CursorCodec::binding(&serde_json::json!([
        "webhooks/deliveries",
        status.map(DeliveryStatus::as_str),
        super::scores::cursor_owner(&caller),
    ]));
    let after = params
        .cursor
        .as_deref()
        .map(|cursor| {
            codec
                .decode::<String>(cursor, &binding)
                .ok_or_else(foreign_cursor)
        })
        .transpose()?;
    let alerts = services.alerts().ok_or(ApiError::AlertsDisabled)?;
    let deliveries = alerts.deliveries(status, after, limit + 1);
    let mut deliveries = super::history::fail_fast(&services, deliveries).await?;
    let more = deliveries.len() > limit;
    deliveries.truncate(limit);
    let next_cursor = more
        .then(|| {
            deliveries
                .last()
                .map(|delivery| codec.encode(&delivery.webhook_id, &binding))
        })
        .flatten();
    let mut response = HttpResponse::Ok();
    if let Some(cursor) = &next_cursor {
        response.insert_header((
            header::LINK,
            super::scores::next_link("/webhooks/deliveries", request.query_string(), cursor),
        ));
    }
    Ok(response.json(DeliveryList {
        deliveries,
        next_cursor,
    }))
}

/// Any other method on `/webhooks/deliveries`: as on `/metrics`, 405 for an operator and the
/// same 404 as `GET` for other keys.
pub async fn deliveries_other_method(caller: Caller) -> Result<HttpResponse, ApiError> {
    super::metrics::other_method(caller).await
}
