//! The two upstream error shapes, built in one place: Entra ID's token-endpoint errors and
//! Defender's `{"error": {"code", "message", "target"}}` envelope.
//!
//! Handlers decide *which* error; this module decides the bytes (status, headers, body,
//! correlation ids), so every refusal looks like Microsoft's whatever path produced it.

use super::clock::entra_timestamp;
use crate::wire::{DefenderError, DefenderErrorBody, EntraErrorBody};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// `Content-Type` of Microsoft's JSON answers.
pub(crate) const JSON_UTF8: &str = "application/json; charset=utf-8";

/// An Entra refusal: OAuth error, AADSTS code and the description's text (without the code
/// prefix and the trailing ids, which [`entra_error`] adds).
pub(crate) struct EntraRefusal {
    /// HTTP status (400 or 401 as Entra answers; 413 for oversized bodies).
    pub status: StatusCode,
    /// OAuth error (`invalid_client`, `invalid_request`, …).
    pub error: &'static str,
    /// AADSTS number.
    pub code: i64,
    /// Human text.
    pub text: String,
}

/// Entra's error answer for `refusal`, stamped with fresh trace and correlation ids.
pub(crate) fn entra_error(refusal: &EntraRefusal, now: OffsetDateTime) -> HttpResponse {
    let trace_id = Uuid::new_v4().to_string();
    let correlation_id = Uuid::new_v4().to_string();
    let timestamp = entra_timestamp(now);
    let body = EntraErrorBody {
        error: refusal.error.to_owned(),
        error_description: format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            refusal.code, refusal.text
        ),
        error_codes: vec![refusal.code],
        timestamp,
        trace_id,
        correlation_id,
    };
    HttpResponse::build(refusal.status)
        .insert_header((header::CONTENT_TYPE, JSON_UTF8))
        .insert_header((header::CACHE_CONTROL, "no-store, no-cache"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// Defender's error answer: `{"error": {"code", "message", "target": <correlation id>}}`, with
/// `Retry-After` (whole seconds) when given.
pub(crate) fn defender_error(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> HttpResponse {
    let body = DefenderErrorBody {
        error: DefenderError {
            code: code.to_owned(),
            message: message.to_owned(),
            target: Some(Uuid::new_v4().to_string()),
        },
    };
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, JSON_UTF8));
    if let Some(wait) = retry_after {
        response.insert_header((
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        ));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    response.json(body)
}

/// Answer to anything that is neither Entra's nor Defender's nor the operator's path.
pub(crate) async fn not_found() -> HttpResponse {
    defender_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The requested resource was not found.",
        None,
    )
}
