//! `GET /metrics`: the Prometheus exposition of [`crate::metrics::Metrics`].
//!
//! Owns only the route; what is measured lives in [`crate::metrics`]. The per-tenant series name
//! customers, so the handler itself requires the operator role of the authenticated [`Caller`]:
//! whatever spelling of the path reached this resource, the check runs. Other keys get the 404
//! of a route that does not exist, whatever the method.

use super::auth::Caller;
use super::error::ApiError;
use crate::metrics::{Format, LiveValues};
use crate::service::Services;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// Prometheus metrics (requires an operator API key; other keys get 404).
///
/// The Prometheus text format (0.0.4) by default; OpenMetrics 1.0 text when `Accept` names
/// `application/openmetrics-text` at a quality at least that of `text/plain` (Prometheus does).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format, or OpenMetrics when asked for",
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
    let accept = request
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    let text = services
        .metrics()
        .encode(live, format)
        .map_err(|error| ApiError::Internal(format!("cannot encode the metrics: {error}")))?;
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((header::VARY, "Accept"))
        .body(text))
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
