//! Microsoft Graph's `GET /v1.0/security/secureScores` and
//! `GET /v1.0/security/secureScoreControlProfiles`: Graph's token checks and error body,
//! `$top` / `$skip`, Graph's own throttling (requests per minute and per ten minutes, and
//! concurrent requests, per application and tenant, shared by both), 90 deterministic daily
//! snapshots per tenant with 60–80 plausible controls and comparisons, and the controls'
//! profiles with the tenant's states.
//!
//! Order of checks, written down once for both: token (401) → tenant → expiry (401) → audience
//! (401) → role (403) → query (400) → `throttled` (429) → concurrency cap (429, holds a slot
//! until answered) → rate windows (429, consume only when granted) → latency → `flaky` (5xx) /
//! `hang` / `malformed` → 200. `retired`, `forbidden` and `unlicensed` are Defender's and do not
//! apply; `comparisons-outage` changes the snapshots' comparisons only.
//!
//! Decisions: without `$top` every snapshot is returned (90, newest first); `$top` and `$skip`
//! take any non-negative integer (`$top=0` is an empty page, a `$skip` past the end too); other
//! `$` query options, repeated options and non-integers are 400 `BadRequest` with OData's
//! wording. Snapshots send no `@odata.nextLink` (90 fit one page). Profiles come at most
//! [`profiles::PROFILE_PAGE_SIZE`] a page (`$top` may ask for fewer), and every page but the
//! last carries an absolute `@odata.nextLink` naming the host the client called.

mod catalogue;
mod controls;
mod profiles;
mod snapshots;

use profiles::control_profiles_body;
use snapshots::{secure_scores_body, Comparisons};

use super::faults::FaultProfile;
use super::responses::{graph_error, GraphIds};
use super::score::{identify, misbehave};
use super::server::Shared;
use super::service::{Endpoint, Service};
use super::stats::InFlight;
use crate::wire::{GRAPH_RESOURCE, GRAPH_SECURE_SCORE_ROLE};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// How many daily snapshots Graph keeps.
pub(crate) const SNAPSHOT_DAYS: u32 = 90;

/// The `@odata.context` Graph answers secure scores with.
const ODATA_CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#security/secureScores";

/// `Content-Type` of a successful Graph answer.
const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// Why a Graph call was not answered 200.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GraphCallError {
    /// No `Authorization: Bearer` header.
    #[error("Access token is empty.")]
    MissingToken,
    /// A token this emulator did not sign, or one naming no known tenant.
    #[error("Access token validation failure. Invalid signature.")]
    InvalidToken,
    /// The token has expired (or is not yet valid) on the emulator clock.
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
    /// The token is for another resource, such as Defender.
    #[error(
        "Access token validation failure. Invalid audience. Request a token for {GRAPH_RESOURCE}."
    )]
    WrongAudience,
    /// No `SecurityEvents.Read.All` role (the `graph-forbidden` profile).
    #[error("Insufficient privileges to complete the operation. Missing application roles. API required roles: {GRAPH_SECURE_SCORE_ROLE}.")]
    MissingRole,
    /// A query option is malformed, repeated or not supported.
    #[error("{0}")]
    InvalidQuery(String),
    /// The `throttled` profile, a rate window or the concurrency cap.
    #[error("Too many requests. Please retry after {} seconds.", .0.as_secs())]
    TooManyRequests(Duration),
    /// The `flaky` profile's 500.
    #[error("An unspecified error has occurred.")]
    Internal,
    /// The `flaky` profile's 503.
    #[error("The service is temporarily unavailable. Please retry later.")]
    Unavailable,
    /// A GET with a body over the limit.
    #[error("The request body is too large.")]
    TooLarge,
}

impl GraphCallError {
    fn answer(&self, ids: &GraphIds, now: OffsetDateTime) -> HttpResponse {
        use StatusCode as S;
        let (status, code, retry_after) = match self {
            GraphCallError::MissingToken
            | GraphCallError::InvalidToken
            | GraphCallError::Expired
            | GraphCallError::WrongAudience => {
                (S::UNAUTHORIZED, "InvalidAuthenticationToken", None)
            }
            GraphCallError::MissingRole => (S::FORBIDDEN, "Forbidden", None),
            GraphCallError::InvalidQuery(_) => (S::BAD_REQUEST, "BadRequest", None),
            GraphCallError::TooManyRequests(wait) => {
                (S::TOO_MANY_REQUESTS, "TooManyRequests", Some(*wait))
            }
            GraphCallError::Internal => (S::INTERNAL_SERVER_ERROR, "generalException", None),
            GraphCallError::Unavailable => (S::SERVICE_UNAVAILABLE, "serviceNotAvailable", None),
            GraphCallError::TooLarge => (S::PAYLOAD_TOO_LARGE, "BadRequest", None),
        };
        graph_error(status, code, &self.to_string(), retry_after, ids, now)
    }
}

/// `$top` and `$skip` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    /// At most this many snapshots (`None`: all).
    pub top: Option<u64>,
    /// Skip this many of the newest first.
    pub skip: u64,
}

/// Reads `$top` and `$skip` from a query string (percent-decoded, so `%24top` is `$top`).
pub(crate) fn parse_page(query: &str) -> Result<Page, GraphCallError> {
    let mut top = None;
    let mut skip = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "$top" => &mut top,
            "$skip" => &mut skip,
            other if other.starts_with('$') => {
                let name: String = other.chars().take(40).collect();
                return Err(GraphCallError::InvalidQuery(format!(
                    "Query option '{name}' is not supported on this resource."
                )));
            }
            // OData ignores custom (non-`$`) query options.
            _ => continue,
        };
        if slot.is_some() {
            return Err(GraphCallError::InvalidQuery(format!(
                "Query option '{key}' was specified more than once, but it must be specified at most once."
            )));
        }
        let number = value.trim().parse::<u64>().map_err(|_| {
            let shown: String = value.chars().take(40).collect();
            GraphCallError::InvalidQuery(format!(
                "Invalid value '{shown}' for {key} query option found. The {key} query option requires a non-negative integer value."
            ))
        })?;
        *slot = Some(number);
    }
    Ok(Page {
        top,
        skip: skip.unwrap_or(0),
    })
}

/// `GET /v1.0/security/secureScores`.
pub(crate) async fn get_secure_scores(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    answer(request, state, Endpoint::SecureScores).await
}

/// `GET /v1.0/security/secureScoreControlProfiles`.
pub(crate) async fn get_control_profiles(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    answer(request, state, Endpoint::ControlProfiles).await
}

async fn answer(
    request: HttpRequest,
    state: web::Data<Shared>,
    endpoint: Endpoint,
) -> HttpResponse {
    let ids = GraphIds::of(&request);
    let mut call = state.stats.call(endpoint);
    let response = match serve(&request, &state, &mut call, &ids, endpoint).await {
        Ok(response) => response,
        Err(refused) => refused.answer(&ids, state.clock.now()),
    };
    call.respond(response.status().as_u16());
    response
}

/// Anything but GET on a Graph path the emulator serves.
pub(crate) async fn secure_scores_wrong_method(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
        None,
        &GraphIds::of(&request),
        state.clock.now(),
    )
}

/// Anything else under `/v1.0/` or `/beta/`: Graph's 404.
pub(crate) async fn graph_not_found(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    graph_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "Resource not found for the segment.",
        None,
        &GraphIds::of(&request),
        state.clock.now(),
    )
}

async fn serve(
    request: &HttpRequest,
    state: &Shared,
    call: &mut InFlight<'_>,
    ids: &GraphIds,
    endpoint: Endpoint,
) -> Result<HttpResponse, GraphCallError> {
    if super::body::declared_too_large(request) {
        return Err(GraphCallError::TooLarge);
    }
    if super::score::bearer_token(request).is_none() {
        return Err(GraphCallError::MissingToken);
    }
    let (tenant, claims) = identify(request, state).ok_or(GraphCallError::InvalidToken)?;
    call.attach(tenant.index);

    let now = state.clock.now().unix_timestamp();
    if claims.exp <= now || claims.nbf > now {
        return Err(GraphCallError::Expired);
    }
    if claims.aud != Service::Graph.resource() {
        return Err(GraphCallError::WrongAudience);
    }
    let fault = tenant.fault();
    // Checked on the token and the current profile, like Defender's role.
    if fault == Some(FaultProfile::GraphForbidden)
        || !claims.roles.iter().any(|r| r == GRAPH_SECURE_SCORE_ROLE)
    {
        return Err(GraphCallError::MissingRole);
    }
    let page = parse_page(request.query_string())?;
    if fault == Some(FaultProfile::Throttled) {
        let wait = Duration::from_secs(state.settings.throttled_retry_after_seconds.max(1));
        return Err(GraphCallError::TooManyRequests(wait));
    }
    let app = Uuid::parse_str(&claims.appid).unwrap_or(tenant.client_id);
    // Held until the answer is built (or the call is dropped): what "concurrent" means.
    let _slot = state
        .graph_concurrency
        .try_enter(tenant.index, app)
        .ok_or_else(|| {
            state.stats.quota_refusal(tenant.index, Service::Graph);
            GraphCallError::TooManyRequests(Duration::from_secs(1))
        })?;
    state
        .graph_quota
        .try_acquire(tenant.index, app, state.clock.now_millis())
        .map_err(|wait| {
            state.stats.quota_refusal(tenant.index, Service::Graph);
            GraphCallError::TooManyRequests(wait)
        })?;

    match misbehave(state, tenant, fault).await {
        Some(500) => return Err(GraphCallError::Internal),
        Some(_) => return Err(GraphCallError::Unavailable),
        None => {}
    }

    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_TYPE, GRAPH_JSON));
    ids.stamp(&mut response);
    if fault == Some(FaultProfile::Malformed) {
        return Ok(response.body(format!(
            "{{\"@odata.context\":\"{ODATA_CONTEXT}\",\"value\":[{{\"currentScore\":"
        )));
    }
    let seed = state.settings.seed;
    let body = match endpoint {
        Endpoint::ControlProfiles => {
            let info = request.connection_info();
            let base = format!("{}://{}", info.scheme(), info.host());
            control_profiles_body(seed, tenant, page, &base)
        }
        _ => {
            let now = state.clock.now();
            let score_day = state.settings.score_day(now);
            let comparisons = if fault == Some(FaultProfile::ComparisonsOutage) {
                Comparisons::Outage
            } else {
                Comparisons::Present
            };
            secure_scores_body(seed, tenant, now, score_day, page, comparisons)
        }
    };
    let bytes = serde_json::to_vec(&body).map_err(|_| GraphCallError::Internal)?;
    Ok(response.body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_accept_non_negative_integers_and_refuse_the_rest() {
        assert_eq!(parse_page("").unwrap(), Page { top: None, skip: 0 });
        assert_eq!(
            parse_page("%24top=1&$skip=3&api-version=x").unwrap(),
            Page {
                top: Some(1),
                skip: 3
            }
        );
        for bad in [
            "$top=-1",
            "$top=abc",
            "$top=1&$top=2",
            "$filter=x",
            "$skip=1.5",
        ] {
            assert!(parse_page(bad).is_err(), "{bad}");
        }
    }
}
