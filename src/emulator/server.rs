//! The HTTPS server: shared state, routes, and the operator endpoints under `/_emulator/`
//! (a prefix no Microsoft path uses).
//!
//! Routes, in one place:
//!
//! | route | what |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token` | Entra's token endpoint ([`super::token`]) |
//! | `GET /api/configurationScore` | Defender's device score ([`super::score`]) |
//! | `GET /api/exposureScore` | Defender's exposure score ([`super::score`]) |
//! | `GET /v1.0/security/secureScores` | Graph's secure scores ([`super::graph`]) |
//! | `GET /v1.0/security/secureScoreControlProfiles` | Graph's control profiles ([`super::graph`]) |
//! | anything else under `/v1.0/`, `/beta/` | Graph-shaped 404 |
//! | `GET /_emulator/stats` | [`super::StatsSnapshot`] as JSON |
//! | `POST /_emulator/reset` | zero the counters (204) |
//! | `GET /_emulator/tenants` | tenants without secrets |
//! | `POST /_emulator/tenants/{slug}/fault` | `{"fault": "flaky" \| null}` |
//! | `POST /_emulator/tenants/{slug}/score` | `{"score": 250.5 \| null}`: the device score served from now on (`null`: drift again) |
//! | `POST /_emulator/clock/advance?seconds=N` | move the emulator clock forward |
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration` | the issuer's OpenID configuration ([`super::callers`]) |
//! | `GET /{tenant}/discovery/v2.0/keys` | its key set (the `jwks_uri`) |
//! | `GET /_emulator/ca.pem` | the CA certificate clients must trust |
//! | `GET /_emulator/callers` | the MSP tenant's caller apps, with their secrets |
//! | `POST /_emulator/callers/{name}/token` | `{"version", "claims"}`: a caller token with claims changed |
//! | `GET /_emulator/keys` | signing key ids and key endpoint counters |
//! | `POST /_emulator/keys/rotate` | sign caller tokens with a new key |
//! | `POST /_emulator/keys/outage` | `{"down": true}`: the key endpoints answer 503 |
//! | anything else | Defender-shaped 404 |
//!
//! The operator endpoints have no authentication: the emulator serves test data on loopback.

use super::body::read_limited;
use super::clock::{defender_time, Clock};
use super::faults::FaultProfile;
use super::options::LatencyRange;
use super::quota::{Concurrency, Quota};
use super::responses::{defender_error, not_found};
use super::stats::Stats;
use super::tenants::{Directory, TenantRecord};
use super::token::AccessTokens;
use super::{callers, graph, score, token, EmulatorError};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Behaviour settings the handlers read (the rest of the options shape the directory).
pub(crate) struct Settings {
    /// Seed of scores and flaky outcomes.
    pub seed: u64,
    /// Global score-call latency.
    pub latency: Option<LatencyRange>,
    /// Latency of the `slow` profile.
    pub slow_latency: LatencyRange,
    /// Failure share of the `flaky` profile.
    pub flaky_error_share: f64,
    /// `Retry-After` of the `throttled` profile.
    pub throttled_retry_after_seconds: u64,
    /// Access token lifetime.
    pub token_lifetime_seconds: u64,
    /// Days added to the emulated day when generating score values (`score_date` minus the
    /// real day at start; 0 unless pinned). Timestamps never move with it.
    pub score_day_shift: i64,
}

impl Settings {
    /// The day number (days since the Unix epoch) whose score values stand for time `at`.
    pub fn score_day(&self, at: time::OffsetDateTime) -> i64 {
        at.unix_timestamp()
            .div_euclid(86_400)
            .saturating_add(self.score_day_shift)
    }
}

/// Everything the handlers share, built once and handed to every actix worker.
pub(crate) struct Shared {
    /// Tenants and app registrations.
    pub directory: Directory,
    /// Counters (what the gateway's tests assert on).
    pub stats: Stats,
    /// Defender's per (application, tenant) sliding windows, shared by both score endpoints.
    pub quota: Quota,
    /// Graph's per (application, tenant) sliding windows (its own, independent of Defender's).
    pub graph_quota: Quota,
    /// Graph's cap on concurrent requests per (application, tenant).
    pub graph_concurrency: Concurrency,
    /// The emulated clock.
    pub clock: Clock,
    /// Access token signing.
    pub tokens: AccessTokens,
    /// Handler settings.
    pub settings: Settings,
    /// Base URLs the emulator answers to (`https://127.0.0.1:PORT`, `https://localhost:PORT`):
    /// the accepted client-assertion audiences.
    pub hosts: Vec<String>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The MSP's own tenant: caller apps and the keys their tokens are signed with.
    pub msp: super::callers::MspTenant,
}

/// Binds the routes to `listener` with `tls`; the returned server runs once polled.
pub(crate) fn build(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    shared: Arc<Shared>,
    workers: usize,
) -> Result<actix_web::dev::Server, EmulatorError> {
    let data = web::Data::from(shared);
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Serve { addr: None, source })?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(
                web::resource("/{tenant}/oauth2/v2.0/token")
                    .route(web::post().to(token::issue_token))
                    .default_service(web::to(token::token_wrong_method)),
            )
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                web::get().to(callers::openid_configuration),
            )
            .route(
                "/{tenant}/discovery/v2.0/keys",
                web::get().to(callers::key_set),
            )
            .service(
                web::resource(crate::wire::CONFIGURATION_SCORE_PATH)
                    .route(web::get().to(score::get_score))
                    .default_service(web::to(score::score_wrong_method)),
            )
            .service(
                web::resource(crate::wire::EXPOSURE_SCORE_PATH)
                    .route(web::get().to(score::get_exposure_score))
                    .default_service(web::to(score::score_wrong_method)),
            )
            .service(
                web::resource(crate::wire::SECURE_SCORES_PATH)
                    .route(web::get().to(graph::get_secure_scores))
                    .default_service(web::to(graph::secure_scores_wrong_method)),
            )
            .service(
                web::resource(crate::wire::SECURE_SCORE_CONTROL_PROFILES_PATH)
                    .route(web::get().to(graph::get_control_profiles))
                    .default_service(web::to(graph::secure_scores_wrong_method)),
            )
            .service(web::scope("/v1.0").default_service(web::to(graph::graph_not_found)))
            .service(web::scope("/beta").default_service(web::to(graph::graph_not_found)))
            .service(
                web::scope("/_emulator")
                    .route("/stats", web::get().to(get_stats))
                    .route("/reset", web::post().to(reset))
                    .route("/tenants", web::get().to(list_tenants))
                    .route("/tenants/{slug}/fault", web::post().to(set_fault))
                    .route("/tenants/{slug}/score", web::post().to(set_score))
                    .route("/clock/advance", web::post().to(advance_clock))
                    .route("/ca.pem", web::get().to(get_ca))
                    .route("/callers", web::get().to(callers::list_callers))
                    .route(
                        "/callers/{name}/token",
                        web::post().to(callers::craft_token),
                    )
                    .route("/keys", web::get().to(callers::get_keys))
                    .route("/keys/rotate", web::post().to(callers::rotate_keys))
                    .route("/keys/outage", web::post().to(callers::set_key_outage)),
            )
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .disable_signals()
    // Stopping is quick: hanging calls are dropped, never waited for.
    .shutdown_timeout(1)
    // A client that closes its side has given up: drop its handler (and the in-flight guard)
    // instead of keeping a `hang` call alive forever.
    .h1_allow_half_closed(false)
    .client_request_timeout(Duration::from_secs(10))
    .backlog(4_096)
    .listen_rustls_0_23(listener, tls)
    .map_err(|source| EmulatorError::Serve {
        addr: Some(addr),
        source,
    })?
    .run();
    Ok(server)
}

fn operator_error(status: StatusCode, message: &str) -> HttpResponse {
    let code = if status == StatusCode::NOT_FOUND {
        "NotFound"
    } else {
        "BadRequest"
    };
    defender_error(status, code, message, None)
}

/// `GET /_emulator/stats`.
async fn get_stats(state: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats.snapshot(&state.directory))
}

/// `POST /_emulator/reset`.
async fn reset(state: web::Data<Shared>) -> HttpResponse {
    state.stats.reset();
    HttpResponse::NoContent().finish()
}

/// One tenant in `GET /_emulator/tenants` (never a secret).
#[derive(Serialize)]
struct TenantView<'a> {
    slug: &'a str,
    name: &'a str,
    tenant_id: Uuid,
    client_id: Uuid,
    credential: super::CredentialKind,
    fault: Option<FaultProfile>,
    /// The device score set with `POST /_emulator/tenants/{slug}/score`, if any.
    score_override: Option<f64>,
    tags: Vec<String>,
}

/// `GET /_emulator/tenants`.
async fn list_tenants(state: web::Data<Shared>) -> HttpResponse {
    let tenants: Vec<TenantView<'_>> = state
        .directory
        .tenants
        .iter()
        .map(|tenant| TenantView {
            slug: &tenant.slug,
            name: &tenant.name,
            tenant_id: tenant.tenant_id,
            client_id: tenant.client_id,
            credential: tenant.kind,
            fault: tenant.fault(),
            score_override: tenant.score_override(),
            tags: tenant.tags(),
        })
        .collect();
    HttpResponse::Ok().json(tenants)
}

/// Body of `POST /_emulator/tenants/{slug}/fault`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultChange {
    /// The new profile, or `null` for healthy.
    fault: Option<FaultProfile>,
}

/// The tenant an operator's `POST /_emulator/tenants/{slug}/…` names, and the request's body;
/// else the answer refusing it (404 for an unknown tenant, 400 for an unreadable body).
async fn operator_change<'s>(
    request: &HttpRequest,
    payload: web::Payload,
    state: &'s Shared,
) -> Result<(&'s TenantRecord, Vec<u8>), HttpResponse> {
    let name = request.match_info().get("slug").unwrap_or_default();
    let Some(tenant) = state.directory.find(name) else {
        return Err(operator_error(
            StatusCode::NOT_FOUND,
            &format!("No tenant named '{name}'."),
        ));
    };
    match read_limited(request, payload).await {
        Ok(body) => Ok((tenant, body)),
        Err(error) => Err(operator_error(StatusCode::BAD_REQUEST, &error.to_string())),
    }
}

/// `POST /_emulator/tenants/{slug}/fault`.
async fn set_fault(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Shared>,
) -> HttpResponse {
    let (tenant, body) = match operator_change(&request, payload, &state).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let change: FaultChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(error) => {
            let message = format!("Expected {{\"fault\": \"<profile>\" | null}}: {error}");
            return operator_error(StatusCode::BAD_REQUEST, &message);
        }
    };
    tenant.set_fault(change.fault);
    let fault = change.fault.map_or("none", FaultProfile::as_str);
    tracing::info!(tenant = %tenant.slug, fault, "fault profile changed");
    HttpResponse::Ok().json(serde_json::json!({
        "tenant": tenant.slug,
        "fault": change.fault,
    }))
}

/// Whether `score` may be set as a device score: finite, 0–10,000 (Defender's are 0–1,000ish;
/// the margin lets tests cross any line a rule may draw).
pub(crate) fn valid_score(score: f64) -> bool {
    score.is_finite() && (0.0..=10_000.0).contains(&score)
}

/// Body of `POST /_emulator/tenants/{slug}/score`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreChange {
    /// The device score to serve, or `null` to go back to the drifting one.
    score: Option<f64>,
}

/// `POST /_emulator/tenants/{slug}/score`.
async fn set_score(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Shared>,
) -> HttpResponse {
    let (tenant, body) = match operator_change(&request, payload, &state).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let change = serde_json::from_slice::<ScoreChange>(&body)
        .ok()
        .filter(|change| change.score.is_none_or(valid_score));
    let Some(change) = change else {
        return operator_error(
            StatusCode::BAD_REQUEST,
            "Expected {\"score\": <number from 0 to 10000> | null}.",
        );
    };
    tenant.set_score_override(change.score);
    tracing::info!(tenant = %tenant.slug, score = ?change.score, "device score override changed");
    HttpResponse::Ok().json(serde_json::json!({
        "tenant": tenant.slug,
        "score": change.score,
    }))
}

/// `POST /_emulator/clock/advance?seconds=N`.
async fn advance_clock(request: HttpRequest, state: web::Data<Shared>) -> HttpResponse {
    let seconds = url::form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(key, _)| key == "seconds")
        .and_then(|(_, value)| value.parse::<u64>().ok())
        .filter(|seconds| *seconds <= 10 * 366 * 86_400);
    let Some(seconds) = seconds else {
        return operator_error(
            StatusCode::BAD_REQUEST,
            "Expected ?seconds=N with N a whole number of seconds up to ten years.",
        );
    };
    state.clock.advance(Duration::from_secs(seconds));
    HttpResponse::Ok().json(serde_json::json!({
        "now": defender_time(state.clock.now()),
        "offset_seconds": state.clock.offset().as_secs(),
    }))
}

/// `GET /_emulator/ca.pem`.
async fn get_ca(state: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(state.ca_pem.clone())
}
