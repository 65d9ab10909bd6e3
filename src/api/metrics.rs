//! `GET /metrics`: the Prometheus exposition of [`crate::metrics::Metrics`].
//!
//! Owns only the route; what is measured lives in [`crate::metrics`]. Access is decided by the
//! authentication guard (the operator role), by path: the per-tenant series name customers.

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
pub async fn get_metrics(services: web::Data<Services>) -> Result<HttpResponse, ApiError> {
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
