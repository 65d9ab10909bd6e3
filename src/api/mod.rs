//! The HTTP API: routes, their OpenAPI description, and the middleware every request passes.
//!
//! Routes and the OpenAPI document are declared together here, so that neither can drift from
//! the other unnoticed (a test compares the generated spec with `openapi/openapi.json`).
//! Handlers are thin: extract, call one function of [`crate::service`], map to a view.

mod auth;
pub mod error;
mod handlers;
mod metrics;
mod middleware;
mod scores;
pub mod views;

use crate::service::Services;
use actix_web::web;
use error::{ApiError, Problem};
use std::sync::Arc;
use utoipa::OpenApi;

pub use auth::OPEN_ROUTES;

/// The OpenAPI 3.1 description of the API (served at `/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "scoregate",
        description = "Microsoft Defender for Endpoint device secure scores of many tenants, behind one API.\n\n\
Errors are RFC 9457 problems (`application/problem+json`) with a stable `code`. Every response carries \
`X-Request-Id` (echoed when the caller sends one).",
        license(name = "MIT")
    ),
    paths(
        handlers::list_tenants,
        handlers::get_tenant,
        handlers::get_score,
        scores::list_scores,
        handlers::healthz,
        handlers::readyz,
        metrics::get_metrics,
    ),
    components(schemas(
        Problem,
        views::TenantView,
        views::TenantList,
        views::TenantDetail,
        views::LastFetchView,
        views::ScoreView,
        views::SourceView,
        views::WarningView,
        views::HealthView,
        scores::ScoreList,
        scores::SummaryView,
        scores::ScoreItem,
        scores::ItemErrorView,
        scores::ItemStatusView,
        scores::SortView,
        scores::FormatView,
    )),
    modifiers(&Security),
    tags(
        (name = "tenants", description = "Registrations and their scores"),
        (name = "operations", description = "Health probes and metrics"),
    )
)]
pub struct ApiDoc;

/// Declares the API-key security schemes, and on every protected operation the security
/// requirement and the 401/429 answers the guard gives (one place, so no route can miss them).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same API key in the `X-API-Key` header.",
            ))),
        );
        let problem = || {
            Content::new(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(
                Ref::from_schema_name("Problem"),
            )))
        };
        let mut unauthenticated = Response::new(
            "No API key, or an invalid one (`unauthenticated`); see `WWW-Authenticate`",
        );
        unauthenticated
            .content
            .insert(error::PROBLEM_JSON.to_owned(), RefOr::T(problem()));
        let mut rate_limited = Response::new(
            "The key's request rate is exceeded (`rate_limited`); see `Retry-After` and `RateLimit-*`",
        );
        rate_limited
            .content
            .insert(error::PROBLEM_JSON.to_owned(), RefOr::T(problem()));
        components
            .responses
            .insert("Unauthenticated".to_owned(), RefOr::T(unauthenticated));
        components
            .responses
            .insert("RateLimited".to_owned(), RefOr::T(rate_limited));
        for (path, item) in openapi.paths.paths.iter_mut() {
            if auth::is_open(path) {
                continue;
            }
            if let Some(operation) = item.get.as_mut() {
                operation.security = Some(vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::new("api_key", Vec::<String>::new()),
                ]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".to_owned(),
                    RefOr::Ref(Ref::from_response_name("Unauthenticated")),
                );
                responses.insert(
                    "429".to_owned(),
                    RefOr::Ref(Ref::from_response_name("RateLimited")),
                );
            }
        }
    }
}

/// The OpenAPI document as generated from the code.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document as pretty JSON with a trailing newline (what `scoregate openapi` prints).
pub fn openapi_json() -> String {
    let mut json = openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

/// Every route template [`configure`] registers: the closed set of the `route` label of the
/// request metrics and log line (anything else is `unmatched`). A test asserts that each
/// registered route reports one of these.
pub const ROUTES: [&str; 9] = [
    "/tenants",
    "/tenants/{id}",
    "/tenants/{id}/score",
    "/scores",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs/{_:.*}",
];

/// The route label of a matched pattern: the template itself if it is one of [`ROUTES`], else
/// `unmatched` (never a string built from the request).
pub(crate) fn route_label(pattern: Option<&str>) -> &'static str {
    pattern
        .and_then(|pattern| ROUTES.iter().find(|route| **route == pattern))
        .copied()
        .unwrap_or(crate::metrics::UNMATCHED_ROUTE)
}

/// Registers every route on an actix app. Each resource answers other methods with a 405
/// problem; paths that match nothing get a 404 problem.
pub fn configure(services: Arc<Services>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let method_not_allowed = || web::to(|| async { Err::<(), _>(ApiError::MethodNotAllowed) });
        cfg.app_data(web::Data::from(services))
            .app_data(web::PathConfig::default().error_handler(|error, _| {
                ApiError::InvalidRequest(format!("bad path: {error}")).into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|error, _| {
                ApiError::InvalidRequest(format!("bad query: {error}")).into()
            }))
            .service(
                // Probes also answer HEAD, which some load balancers send.
                web::resource("/healthz")
                    .route(web::get().to(handlers::healthz))
                    .route(web::head().to(handlers::healthz))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/readyz")
                    .route(web::get().to(handlers::readyz))
                    .route(web::head().to(handlers::readyz))
                    .default_service(method_not_allowed()),
            )
            .service(
                utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi()),
            )
            .service(
                // Everything else, known route or not, is behind authentication: the router
                // decides which resource a request reaches (on the decoded path), and only then
                // is the guard in front of it. The open routes above are `auth::OPEN_ROUTES`.
                web::scope("")
                    .wrap(actix_web::middleware::from_fn(auth::authenticate))
                    .service(
                        web::resource("/tenants")
                            .route(web::get().to(handlers::list_tenants))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/tenants/{id}")
                            .route(web::get().to(handlers::get_tenant))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/tenants/{id}/score")
                            .route(web::get().to(handlers::get_score))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/scores")
                            .route(web::get().to(scores::list_scores))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/metrics")
                            .route(web::get().to(metrics::get_metrics))
                            .default_service(web::to(metrics::other_method)),
                    )
                    .default_service(web::to(|| async { Err::<(), _>(ApiError::NotFound) })),
            );
    }
}

/// Builds the actix app factory used by `serve`, `demo` and the tests.
pub fn app(
    services: Arc<Services>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    services.metrics.register_routes(&ROUTES);
    actix_web::App::new()
        .wrap(actix_web::middleware::from_fn(auth::limits))
        .wrap(actix_web::middleware::from_fn(middleware::request_context))
        .configure(configure(services))
}
