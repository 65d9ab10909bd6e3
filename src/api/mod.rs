//! The HTTP API: routes, their OpenAPI description, and the middleware every request passes.
//!
//! Routes and the OpenAPI document are declared together here, so that neither can drift from
//! the other unnoticed (a test compares the generated spec with `openapi/openapi.json`).
//! Handlers are thin: extract, call one function of [`crate::service`], map to a view.

mod alerts;
mod auth;
mod controls;
pub mod error;
mod handlers;
mod history;
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
        description = "Microsoft security scores of many tenants (Defender device and exposure scores, Microsoft Secure Score), behind one API.\n\n\
Errors are RFC 9457 problems (`application/problem+json`) with a stable `code`. Every response carries \
`X-Request-Id` (echoed when the caller sends one).\n\n\
**Query parameters**: an empty value means the parameter is absent (`?cursor=&tag=` is `?`), for every \
parameter of every route. Unknown parameters are refused (400 `invalid_request`).\n\n\
**Other methods**: a documented path asked with a method it does not document answers 405 \
`method_not_allowed` with `Allow`; an undocumented path answers 404 `not_found`. Requests with a body, \
a URL over 4 KiB (414) or headers over 16 KiB (431) are refused with `invalid_request`.",
        license(name = "MIT", identifier = "MIT")
    ),
    // Relative: the gateway's own address, wherever it is deployed.
    servers((url = "/", description = "This gateway")),
    paths(
        handlers::list_tenants,
        handlers::get_tenant,
        handlers::get_score,
        scores::list_scores,
        scores::list_scores_csv,
        controls::get_tenant_controls,
        controls::list_controls,
        history::get_tenant_history,
        history::get_tenant_history_csv,
        history::get_portfolio_history,
        history::get_portfolio_history_csv,
        history::controls::get_control_history,
        alerts::list_firing,
        alerts::list_events,
        alerts::list_deliveries,
        handlers::healthz,
        handlers::readyz,
        metrics::get_metrics,
        handlers::get_openapi,
    ),
    components(schemas(
        Problem,
        crate::code::Code,
        views::TenantView,
        views::TenantList,
        views::TenantDetail,
        views::LastFetchView,
        crate::model::Reading,
        views::ScoreView,
        crate::model::Metric,
        crate::model::Categories,
        crate::model::Comparison,
        views::SourceView,
        views::WarningView,
        views::HealthView,
        scores::ScoreList,
        crate::fanout::Summary,
        scores::ScoreItem,
        scores::ItemErrorView,
        crate::fanout::ItemStatus,
        crate::fanout::SortOrder,
        scores::JsonFormat,
        scores::FormatView,
        history::TenantHistory,
        history::PortfolioHistory,
        history::controls::ControlHistory,
        crate::history::ControlChange,
        crate::history::Point,
        crate::history::PortfolioPoint,
        crate::history::Interval,
        controls::TenantControls,
        controls::ControlView,
        controls::ControlList,
        controls::ControlRow,
        controls::FailedTenantView,
        crate::controls::Category,
        crate::controls::Status,
        crate::controls::State,
        crate::controls::ControlSort,
        alerts::FiringList,
        alerts::EventList,
        alerts::DeliveryList,
        crate::alerts::FiringAlert,
        crate::alerts::AlertEvent,
        crate::alerts::EventType,
        crate::alerts::Delivery,
        crate::alerts::DeliveryStatus,
    )),
    modifiers(&Security, &Flattened),
    tags(
        (name = "tenants", description = "Registrations and their scores"),
        (name = "controls", description = "Microsoft Secure Score controls: what to fix, per tenant and across tenants"),
        (name = "history", description = "Scores over time, per tenant and for the portfolio"),
        (name = "alerts", description = "Alert rules firing now, their transitions, and webhook deliveries"),
        (name = "operations", description = "Health probes and metrics"),
    )
)]
pub struct ApiDoc;

/// Completes every operation in one place, so that no route can miss it: the API-key security
/// requirement (or `security: []` on open routes), and the answers of the guard and the error
/// edge that any route can give (400, 414, 431; 401, 403, 429 and 500 on protected routes).
/// Each `.csv` operation gets the parameters of its JSON route without `format` (one definition
/// of them).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{Ref, RefOr, Schema};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    // Both credentials use this one scheme (told apart by form), so that a
                    // generated client sends either; most callers with Entra ID send a JWT.
                    .bearer_format("JWT")
                    .description(Some(
                        "An Entra ID access token (a JWT issued to a caller app or managed \
                         identity for scoregate's App ID URI, with an app role mapped in \
                         `[auth.entra]`) or an API key: `Authorization: Bearer <token or key>`.",
                    ))
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
        // (status, component name, description, on open routes too)
        let shared = [
            ("400", "InvalidRequest", "A bad query, or a request with a body (`invalid_request`)", true),
            ("401", "Unauthenticated", "No credential, an invalid API key or access token, or conflicting credentials (`unauthenticated`); see `WWW-Authenticate`", false),
            ("403", "Forbidden", "A valid Entra ID access token that maps to no configured caller (`forbidden`)", false),
            ("414", "UriTooLong", "The URL is longer than 4 KiB (`invalid_request`)", true),
            ("429", "RateLimited", "The key's request rate is exceeded (`rate_limited`); see `Retry-After` and `RateLimit-*`", false),
            ("431", "HeadersTooLarge", "The headers are larger than 16 KiB (`invalid_request`)", true),
            ("500", "Internal", "A bug (`internal`); details only in the gateway's log", false),
        ];
        for (_, name, description, _) in shared {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(problem_response(description)));
        }
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
        ]);
        let json_parameters: std::collections::HashMap<String, _> = openapi
            .paths
            .paths
            .iter()
            .filter_map(|(path, item)| {
                let csv = format!("{path}.csv");
                openapi.paths.paths.contains_key(&csv).then(|| {
                    let parameters = item.get.as_ref().and_then(|get| get.parameters.clone());
                    (csv, parameters)
                })
            })
            .collect();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let open = auth::is_open(path);
            let Some(operation) = item.get.as_mut() else {
                continue;
            };
            if let Some(parameters) = json_parameters.get(path) {
                operation.parameters = parameters.clone().map(|parameters| {
                    parameters
                        .into_iter()
                        .filter(|parameter| !matches!(parameter, RefOr::T(p) if p.name == "format"))
                        .collect()
                });
            }
            // Says "an empty value means absent" in the document's own terms (utoipa has no
            // field for it, so it goes in through the extensions, which are flattened as is).
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter {
                    // Lists of strings take "" as an item already; saying it again only makes
                    // contract testers send numbers for them.
                    let list = matches!(&parameter.schema, Some(RefOr::T(Schema::Array(_))));
                    if matches!(parameter.parameter_in, ParameterIn::Query) && !list {
                        parameter
                            .extensions
                            .get_or_insert_with(Default::default)
                            .insert("allowEmptyValue".to_owned(), serde_json::Value::Bool(true));
                    }
                }
            }
            operation.security = if open {
                Some(Vec::new())
            } else {
                Some(vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::new("api_key", Vec::<String>::new()),
                ])
            };
            let responses = &mut operation.responses.responses;
            for (status, name, _, on_open) in shared {
                if (on_open || !open) && !responses.contains_key(status) {
                    responses.insert(status.to_owned(), RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// Writes each schema composed only of inline parts as the one object it is. utoipa renders a
/// `#[serde(flatten)]` field as an `allOf` item; where no item is a `$ref` (the score body's
/// secure details in [`crate::model::Reading`], the optional body of a `/scores` item), the
/// parts are merged: their properties and `required` lists, under the schema's own description
/// and example. A composition with a named part (`ScoreView` = `Reading` + its own fields) is
/// kept as it is: generated clients reuse the named type.
struct Flattened;

impl utoipa::Modify for Flattened {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for schema in components.schemas.values_mut() {
            let RefOr::T(Schema::AllOf(all_of)) = schema else {
                continue;
            };
            if let Some(mut object) = inline_object(&Schema::AllOf(all_of.clone())) {
                object.description = all_of.description.take();
                object.example = all_of.example.take();
                *schema = RefOr::T(Schema::Object(object));
            }
        }
    }
}

/// `schema` as one object when it is an object or an `allOf` of inline objects (nested
/// `allOf`s included); `None` when any part is a `$ref` or another kind of schema. The parts'
/// own descriptions are dropped: they describe Rust types, not the merged object.
fn inline_object(schema: &utoipa::openapi::schema::Schema) -> Option<utoipa::openapi::Object> {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    match schema {
        Schema::Object(object) => Some(object.clone()),
        Schema::AllOf(all_of) => {
            let mut merged = utoipa::openapi::ObjectBuilder::new().build();
            for item in &all_of.items {
                let RefOr::T(item) = item else {
                    return None;
                };
                let part = inline_object(item)?;
                merged.properties.extend(part.properties);
                for name in part.required {
                    if !merged.required.contains(&name) {
                        merged.required.push(name);
                    }
                }
            }
            Some(merged)
        }
        _ => None,
    }
}

/// A response whose body is a [`Problem`].
fn problem_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{Content, Ref, RefOr, Response};
    let mut response = Response::new(description);
    response.content.insert(
        error::PROBLEM_JSON.to_owned(),
        RefOr::T(Content::new(Some(
            RefOr::<utoipa::openapi::schema::Schema>::Ref(Ref::from_schema_name("Problem")),
        ))),
    );
    response
}

/// The OpenAPI document as generated from the code.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document as pretty JSON with a trailing newline (what `scoregate openapi` prints).
pub fn openapi_json() -> String {
    to_json(&openapi())
}

/// The document a gateway with authentication off serves: no security requirement and no
/// 401/429 answers, because it gives none (the demo and loopback set-ups). Generated clients
/// and contract testers then see what this deployment really does.
pub fn openapi_json_without_auth() -> String {
    let mut document = openapi();
    document.security = Some(Vec::new());
    if let Some(components) = document.components.as_mut() {
        components.security_schemes.clear();
        components.responses.remove("Unauthenticated");
        components.responses.remove("RateLimited");
    }
    for item in document.paths.paths.values_mut() {
        if let Some(operation) = item.get.as_mut() {
            operation.security = Some(Vec::new());
            operation.responses.responses.remove("401");
            operation.responses.responses.remove("429");
        }
    }
    to_json(&document)
}

fn to_json(document: &utoipa::openapi::OpenApi) -> String {
    let mut json = document
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

/// Every route template [`configure`] registers: the closed set of the `route` label of the
/// request metrics and log line (anything else is `unmatched`). A test asserts that each
/// registered route reports one of these.
pub const ROUTES: [&str; 21] = [
    "/tenants",
    "/tenants/{id}",
    "/tenants/{id}/score",
    "/tenants/{id}/controls",
    "/controls",
    "/tenants/{id}/history",
    "/tenants/{id}/history.csv",
    "/tenants/{id}/controls/{control}/history",
    "/scores",
    "/scores.csv",
    "/scores/history",
    "/scores/history.csv",
    "/alerts",
    "/alerts/events",
    "/webhooks/deliveries",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
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
                // Served here rather than by Swagger UI, so that it answers like every route
                // (405 for other methods); Swagger UI is only pointed at it.
                web::resource("/openapi.json")
                    .route(web::get().to(handlers::get_openapi))
                    .default_service(method_not_allowed()),
            )
            .service(
                // `/docs` is where people type it: sent on to the UI's own path (its relative
                // links need the trailing slash).
                web::resource("/docs")
                    .route(web::get().to(handlers::redirect_to_docs))
                    .route(web::head().to(handlers::redirect_to_docs))
                    .default_service(method_not_allowed()),
            )
            .service(
                // In a `/docs` scope: a static prefix is a string comparison, where Swagger UI's
                // tail pattern alone would cost every request a regex run (docs/performance.md).
                web::scope("/docs").service(
                    utoipa_swagger_ui::SwaggerUi::new("/{_:.*}")
                        .config(utoipa_swagger_ui::Config::from("/openapi.json")),
                ),
            )
            .service(
                // Everything else, known route or not, is behind authentication: the router
                // decides which resource a request reaches (on the decoded path), and only then
                // is the guard in front of it. The open routes above are `auth::OPEN_ROUTES`.
                web::scope("")
                    .wrap(actix_web::middleware::from_fn(auth::authenticate))
                    // The hottest route first: the router tries resources in order, and each
                    // pattern with a `{id}` costs a regex match (docs/performance.md).
                    .service(
                        web::resource("/tenants/{id}/score")
                            .route(web::get().to(handlers::get_score))
                            .default_service(method_not_allowed()),
                    )
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
                        web::resource("/tenants/{id}/controls")
                            .route(web::get().to(controls::get_tenant_controls))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/controls")
                            .route(web::get().to(controls::list_controls))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/tenants/{id}/history")
                            .route(web::get().to(history::get_tenant_history))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/tenants/{id}/history.csv")
                            .route(web::get().to(history::get_tenant_history_csv))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/tenants/{id}/controls/{control}/history")
                            .route(web::get().to(history::controls::get_control_history))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/scores/history")
                            .route(web::get().to(history::get_portfolio_history))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/scores/history.csv")
                            .route(web::get().to(history::get_portfolio_history_csv))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/scores")
                            .route(web::get().to(scores::list_scores))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/scores.csv")
                            .route(web::get().to(scores::list_scores_csv))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/alerts")
                            .route(web::get().to(alerts::list_firing))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/alerts/events")
                            .route(web::get().to(alerts::list_events))
                            .default_service(method_not_allowed()),
                    )
                    .service(
                        web::resource("/webhooks/deliveries")
                            .route(web::get().to(alerts::list_deliveries))
                            .default_service(web::to(alerts::deliveries_other_method)),
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
    services.metrics().register_routes(&ROUTES);
    actix_web::App::new()
        .wrap(actix_web::middleware::from_fn(auth::limits))
        .wrap(actix_web::middleware::from_fn(middleware::request_context))
        .configure(configure(services))
}
