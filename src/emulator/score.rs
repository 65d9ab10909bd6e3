//! Defender's score endpoints, `GET /api/configurationScore` (the device score) and
//! `GET /api/exposureScore`: bearer-token checks, fault profiles, the quota they share, latency,
//! and the scores themselves (deterministic per seed and tenant, drifting once per emulated day).
//!
//! Order of checks, written down once: token (401) → tenant → `retired` (410) → expiry (401) →
//! audience (403) → role (403) → licence (401) → `throttled` (429) → quota (429, consumes a
//! slot only when granted) → latency → `flaky` (5xx) / `hang` / `malformed` → 200.

use super::body::declared_too_large;
use super::clock::defender_time;
use super::faults::{flaky_failure, FaultProfile};
use super::responses::defender_error;
use super::server::Shared;
use super::service::{Endpoint, Service};
use super::stats::InFlight;
use super::tenants::{mix, TenantRecord};
use super::token::AccessClaims;
use crate::wire::{ConfigurationScore, DEFENDER_RESOURCE, DEFENDER_SCORE_ROLE};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use std::time::Duration;

use uuid::Uuid;

/// The `@odata.context` Defender answers the device score with.
pub(crate) const ODATA_CONTEXT: &str =
    "https://api.security.microsoft.com/api/$metadata#ConfigurationScore/$entity";

/// The `@odata.context` Defender answers the exposure score with.
pub(crate) const EXPOSURE_ODATA_CONTEXT: &str =
    "https://api.security.microsoft.com/api/$metadata#ExposureScore/$entity";

/// `Content-Type` of a successful answer.
const ODATA_JSON: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";

/// Why a score call was not answered 200.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScoreError {
    /// No usable `Authorization: Bearer` header, a token this emulator did not sign, or one
    /// naming no known tenant.
    #[error("Authorization has been denied for this request.")]
    Unauthenticated,
    /// The token has expired (or is not yet valid) on the emulator clock.
    #[error("Authorization has been denied for this request. The access token has expired.")]
    Expired,
    /// The token is for another resource, such as Graph (Defender answers a wrong audience with
    /// 403, not 401).
    #[error("The access token audience is invalid. Request a token for {DEFENDER_RESOURCE}.")]
    WrongAudience,
    /// No `Score.Read.All` role (the `forbidden` profile).
    #[error(
        "Missing application roles. API required roles: {DEFENDER_SCORE_ROLE}. Application roles: ."
    )]
    MissingRole,
    /// The `retired` profile: the MDE API no longer exists for this tenant.
    #[error("This API has been retired (MC1220762). Use the Microsoft Graph Security API.")]
    Retired,
    /// The `unlicensed` profile.
    #[error("No Tvm license")]
    Unlicensed,
    /// The `throttled` profile.
    #[error("Rate limit is exceeded. Try again in {} seconds.", .0.as_secs())]
    Throttled(Duration),
    /// The quota of this application in this tenant is spent.
    #[error("Rate limit is exceeded. Try again in {} seconds.", .0.as_secs())]
    QuotaExceeded(Duration),
    /// The `flaky` profile's 500.
    #[error("An error has occurred.")]
    Internal,
    /// The `flaky` profile's 503.
    #[error("The service is temporarily unavailable. Please retry later.")]
    Unavailable,
    /// A GET with a body over the limit.
    #[error("The request body is too large.")]
    TooLarge,
}

impl ScoreError {
    fn answer(&self) -> HttpResponse {
        let (status, code, retry_after) = match self {
            ScoreError::Unauthenticated | ScoreError::Expired | ScoreError::Unlicensed => {
                (StatusCode::UNAUTHORIZED, "Unauthorized", None)
            }
            ScoreError::WrongAudience | ScoreError::MissingRole => {
                (StatusCode::FORBIDDEN, "Forbidden", None)
            }
            ScoreError::Retired => (StatusCode::GONE, "Gone", None),
            ScoreError::Throttled(wait) | ScoreError::QuotaExceeded(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                Some(*wait),
            ),
            ScoreError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                None,
            ),
            ScoreError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", None)
            }
            ScoreError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "BadRequest", None),
        };
        defender_error(status, code, &self.to_string(), retry_after)
    }
}

/// The score of `tenant` on day number `day` (see `Settings::score_day`): a per-tenant base, a
/// slow wave over ~3 months and a small daily wobble, recomputed once per day, two decimals.
pub(crate) fn score_at(seed: u64, tenant: &TenantRecord, day: i64) -> f64 {
    let index = tenant.index as u64;
    let phase = (mix(&[seed, 0x5C0E, index]) % 360) as f64;
    let wave = 25.0 * ((day as f64) * std::f64::consts::TAU / 97.0 + phase.to_radians()).sin();
    let wobble = (mix(&[seed, 0xDA7, index, day as u64]) % 1_001) as f64 / 100.0 - 5.0;
    let score = (tenant.base_score + wave + wobble).max(0.0);
    (score * 100.0).round() / 100.0
}

/// The exposure score of `tenant` on day number `day`: 0–100 (lower is better), a per-tenant
/// base between 15 and 70, a slow wave and a daily wobble, recomputed once per day.
/// Unrounded, as Defender answers (`33.491554051195706`).
pub(crate) fn exposure_at(seed: u64, tenant: &TenantRecord, day: i64) -> f64 {
    let index = tenant.index as u64;
    let base = 15.0 + (mix(&[seed, 0xE7905, index]) % 5_501) as f64 / 100.0;
    let phase = (mix(&[seed, 0xE7906, index]) % 360) as f64;
    let wave = 8.0 * ((day as f64) * std::f64::consts::TAU / 83.0 + phase.to_radians()).sin();
    let wobble = (mix(&[seed, 0xE7907, index, day as u64]) % 600_001) as f64 / 100_000.0 - 3.0;
    (base + wave + wobble).clamp(0.0, 100.0)
}

/// The token of an `Authorization: Bearer …` header, if any.
pub(crate) fn bearer_token(request: &HttpRequest) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `GET /api/configurationScore`.
pub(crate) async fn get_score(request: HttpRequest, state: web::Data<Shared>) -> HttpResponse {
    answer(Endpoint::ConfigurationScore, &request, &state).await
}

/// `GET /api/exposureScore`.
pub(crate) async fn get_exposure_score(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    answer(Endpoint::ExposureScore, &request, &state).await
}

async fn answer(endpoint: Endpoint, request: &HttpRequest, state: &Shared) -> HttpResponse {
    let mut call = state.stats.call(endpoint);
    let response = match serve(endpoint, request, state, &mut call).await {
        Ok(response) => response,
        Err(refused) => refused.answer(),
    };
    call.respond(response.status().as_u16());
    response
}

/// The tenant and claims of the request's bearer token, if it is one this emulator signed for a
/// known tenant (expiry, audience and roles are the caller's to check).
pub(crate) fn identify<'s>(
    request: &HttpRequest,
    state: &'s Shared,
) -> Option<(&'s TenantRecord, AccessClaims)> {
    let claims = state.tokens.read(bearer_token(request)?)?;
    let tenant = Uuid::parse_str(&claims.tid)
        .ok()
        .and_then(|tid| state.directory.by_tenant_id(tid))?;
    Some((tenant, claims))
}

async fn serve(
    endpoint: Endpoint,
    request: &HttpRequest,
    state: &Shared,
    call: &mut InFlight<'_>,
) -> Result<HttpResponse, ScoreError> {
    if declared_too_large(request) {
        return Err(ScoreError::TooLarge);
    }
    let (tenant, claims) = identify(request, state).ok_or(ScoreError::Unauthenticated)?;
    call.attach(tenant.index);
    let fault = tenant.fault();
    // A retired API refuses whatever the token's state; the token is only needed to know whose
    // emulated Defender this is.
    if fault == Some(FaultProfile::Retired) {
        return Err(ScoreError::Retired);
    }

    let now = state.clock.now().unix_timestamp();
    if claims.exp <= now || claims.nbf > now {
        return Err(ScoreError::Expired);
    }
    if claims.aud != Service::Defender.resource() {
        return Err(ScoreError::WrongAudience);
    }
    // The role is checked on the token *and* the current profile, so that a test can turn a
    // tenant `forbidden` without waiting for its token to expire.
    if fault == Some(FaultProfile::Forbidden)
        || !claims.roles.iter().any(|r| r == DEFENDER_SCORE_ROLE)
    {
        return Err(ScoreError::MissingRole);
    }
    if fault == Some(FaultProfile::Unlicensed) {
        return Err(ScoreError::Unlicensed);
    }
    if fault == Some(FaultProfile::Throttled) {
        let wait = Duration::from_secs(state.settings.throttled_retry_after_seconds.max(1));
        return Err(ScoreError::Throttled(wait));
    }
    let app = Uuid::parse_str(&claims.appid).unwrap_or(tenant.client_id);
    state
        .quota
        .try_acquire(tenant.index, app, state.clock.now_millis())
        .map_err(|wait| {
            state.stats.quota_refusal(tenant.index, Service::Defender);
            ScoreError::QuotaExceeded(wait)
        })?;

    match misbehave(state, tenant, fault).await {
        Some(500) => return Err(ScoreError::Internal),
        Some(_) => return Err(ScoreError::Unavailable),
        None => {}
    }

    let at = state.clock.now();
    let time = defender_time(at);
    let day = state.settings.score_day(at);
    let (context, score) = match endpoint {
        Endpoint::ExposureScore => (
            EXPOSURE_ODATA_CONTEXT,
            exposure_at(state.settings.seed, tenant, day),
        ),
        _ => (
            ODATA_CONTEXT,
            tenant
                .score_override()
                .unwrap_or_else(|| score_at(state.settings.seed, tenant, day)),
        ),
    };
    if fault == Some(FaultProfile::Malformed) {
        let broken = format!("{{\"@odata.context\":\"{context}\",\"time\":\"{time}\",\"score\":");
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, ODATA_JSON))
            .body(broken));
    }
    let body = ConfigurationScore {
        odata_context: Some(context.to_owned()),
        time,
        score,
    };
    let bytes = serde_json::to_vec(&body).map_err(|_| ScoreError::Internal)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, ODATA_JSON))
        .body(bytes))
}

/// The misbehaviour every score endpoint shares, after the checks and the quota: the global and
/// `slow` latency, then `hang` (never returns) or `flaky` (`Some(500)` or `Some(503)`: the call
/// fails). `None`: answer normally.
pub(crate) async fn misbehave(
    state: &Shared,
    tenant: &TenantRecord,
    fault: Option<FaultProfile>,
) -> Option<u16> {
    let delay = {
        let mut rng = rand::rng();
        let global = state
            .settings
            .latency
            .map(|range| range.sample(&mut rng))
            .unwrap_or_default();
        let slow = if fault == Some(FaultProfile::Slow) {
            state.settings.slow_latency.sample(&mut rng)
        } else {
            Duration::ZERO
        };
        global + slow
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(FaultProfile::Flaky) => {
            // One call number per tenant across its score endpoints: deterministic for a test
            // that calls one endpoint, and still the configured share overall.
            let number = tenant
                .flaky_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let share = state.settings.flaky_error_share;
            flaky_failure(state.settings.seed, tenant.index, number, share)
        }
        Some(FaultProfile::Hang) => {
            // Never answers. The in-flight guard (and Graph's concurrency slot) is released
            // when actix drops this future: when the client disconnects or the server stops.
            std::future::pending::<()>().await;
            None
        }
        _ => None,
    }
}

/// Anything but GET on a Defender score path.
pub(crate) async fn score_wrong_method(request: HttpRequest) -> HttpResponse {
    defender_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "The requested resource does not support http method '{}'.",
            request.method()
        ),
        None,
    )
}
