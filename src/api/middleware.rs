//! The middleware every request passes: request id, problem rendering, one log line.
//!
//! Values a caller controls reach the metrics only through closed sets (route templates or
//! `unmatched`, methods or `other`), and the log through the subscriber, which escapes control
//! characters in every field (see [`crate::telemetry`]).

use super::error::ApiError;
use crate::service::Services;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::time::Instant;

/// The request id header, echoed or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's id is echoed when it is short and printable; anything else is replaced, so that
/// ids are safe in logs and headers.
fn accepted_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let valid = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    valid.then(|| text.to_owned())
}

/// Assigns the request id, renders [`ApiError`]s as problems carrying it, sets `X-Request-Id` on
/// every response, logs one line per request and counts it in the metrics.
pub async fn request_context(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(accepted_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let response = next.call(request).await?;
    let rendered = response
        .response()
        .error()
        .and_then(|error| error.as_error::<ApiError>())
        .map(|error| error.render(&id));
    let mut response = match rendered {
        Some(mut problem) => {
            // Headers set on the way out by inner middleware (the guard's `RateLimit-*`) belong
            // to the answer whatever its body: keep those the problem does not set itself.
            let own: Vec<HeaderName> = problem.headers().keys().cloned().collect();
            for (name, value) in response.headers() {
                if !own.contains(name) {
                    problem.headers_mut().append(name.clone(), value.clone());
                }
            }
            response.into_response(problem).map_into_right_body()
        }
        None => response.map_into_left_body(),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    // The pattern of the resource the router chose (on the decoded path), in the closed set.
    let route = super::route_label(response.request().match_pattern().as_deref());
    let status = response.status().as_u16();
    let latency = started.elapsed();
    let request = response.request();
    if let Some(services) = request.app_data::<actix_web::web::Data<Services>>() {
        services
            .metrics()
            .http_request(route, method.as_str(), status, latency);
    }
    // The key's or mapping's name (and an Entra caller's app id), never the credential: set by
    // the guard on authenticated requests. Borrowed for the line, not copied.
    let extensions = request.extensions();
    let caller = extensions.get::<super::auth::Caller>();
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status,
        // To the microsecond: `0.589`, not `0.5888570000000001`.
        latency_ms = latency.as_micros() as f64 / 1000.0,
        tenant = %request.match_info().get("id").unwrap_or("-"),
        caller = %caller.map_or("-", |caller| caller.name.as_str()),
        caller_app = %caller.and_then(|caller| caller.app_id.as_deref()).unwrap_or("-"),
        "request"
    );
    drop(extensions);
    Ok(response)
}
