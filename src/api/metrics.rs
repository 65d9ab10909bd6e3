//! `GET /metrics`: the Prometheus exposition of [`crate::metrics::Metrics`].
//!
//! Owns only the route; what is measured lives in [`crate::metrics`]. The per-tenant series name
//! customers, so the handler itself requires the operator role of the authenticated [`Caller`]:
//! whatever spelling of the path reached this resource, the check runs. Other keys get the 404
//! of a route that does not exist, whatever the method.

use super::auth::Caller;
use super::error::ApiError;
use crate::metrics::{LiveValues, CONTENT_TYPE};
use crate::service::Services;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// Prometheus metrics (requires an operator API key; other keys get 404).
///
/// OpenMetrics text, which Prometheus asks for and scrapes as is. A caller whose `Accept` names
/// `text/plain` and not `application/openmetrics-text` gets the same text as `text/plain`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics in OpenMetrics text format",
            content(
                (String = "text/plain"),
                (String = "application/openmetrics-text"),
            )),
        (status = 404, description = "The key is not an operator key: `/metrics` does not exist for it (`not_found`)",
            body = super::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_metrics(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    if !caller.operator {
        return Err(ApiError::NotFound);
    }
    let live = LiveValues {
        in_flight: services.upstream_in_flight(),
        cooling_down: services.tenants_cooling_down(),
        tenants: services.registry().len(),
    };
    let text = services
        .metrics()
        .encode(live)
        .map_err(|error| ApiError::Internal(format!("cannot encode the metrics: {error}")))?;
    let content_type = if wants_plain_text(&request) {
        "text/plain; charset=utf-8"
    } else {
        CONTENT_TYPE
    };
    Ok(HttpResponse::Ok().content_type(content_type).body(text))
}

/// Whether `Accept` names `text/plain` but not OpenMetrics (Prometheus names both).
fn wants_plain_text(request: &HttpRequest) -> bool {
    let accept: Vec<String> = request
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|media| media.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .collect();
    accept.iter().any(|media| media == "text/plain")
        && !accept
            .iter()
            .any(|media| media == "application/openmetrics-text")
}

/// Any other method on `/metrics`: 405 for an operator, and for other keys the same 404 as
/// `GET`, so that they cannot tell the route exists.
pub async fn other_method(caller: Caller) -> Result<HttpResponse, ApiError> {
    Err(if caller.operator {
        ApiError::MethodNotAllowed
    } else {
        ApiError::NotFound
    })
}
