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
use actix_web::{web, HttpResponse};

/// Prometheus metrics in OpenMetrics text format (requires an operator API key).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics in OpenMetrics text format (Prometheus scrapes it as is)",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, description = "Missing or unknown API key", body = super::error::Problem,
            content_type = "application/problem+json"),
    ))]
pub async fn get_metrics(
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    if !caller.operator {
        return Err(ApiError::NotFound);
    }
    let live = LiveValues {
        in_flight: services.quota.in_flight(),
        cooling_down: services.quota.tenants_cooling_down(),
        tenants: services.registry().len(),
    };
    let text = services
        .metrics
        .encode(live)
        .map_err(|error| ApiError::Internal(format!("cannot encode the metrics: {error}")))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
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
