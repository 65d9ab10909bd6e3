//! The upstream error shapes, built in one place: Entra ID's token-endpoint errors, Defender's
//! `{"error": {"code", "message", "target"}}` envelope and Graph's `{"error": {"code",
//! "message", "innerError": {"date", "request-id", "client-request-id"}}}`.
//!
//! Handlers decide *which* error; this module decides the bytes (status, headers, body,
//! correlation ids), so every refusal looks like Microsoft's whatever path produced it.

use super::clock::{entra_timestamp, graph_date};
use crate::wire::{
    DefenderError, DefenderErrorBody, EntraErrorBody, GraphError, GraphErrorBody, GraphInnerError,
};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
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

/// Graph's correlation ids of one request: a fresh `request-id`, and the client's
/// `client-request-id` echoed when it is a GUID (Graph's documented format; anything else is
/// replaced, so that no caller-controlled text is reflected).
pub(crate) struct GraphIds {
    /// Graph's id of this request.
    pub request_id: String,
    /// The client's id, or a fresh one.
    pub client_request_id: String,
}

impl GraphIds {
    /// The ids of `request`.
    pub fn of(request: &HttpRequest) -> Self {
        let client_request_id = request
            .headers()
            .get("client-request-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| Uuid::parse_str(value.trim()).ok())
            .unwrap_or_else(Uuid::new_v4);
        Self {
            request_id: Uuid::new_v4().to_string(),
            client_request_id: client_request_id.to_string(),
        }
    }

    /// Adds the `request-id` and `client-request-id` headers Graph sends on every answer.
    pub fn stamp(&self, response: &mut HttpResponseBuilder) {
        response
            .insert_header(("request-id", self.request_id.as_str()))
            .insert_header(("client-request-id", self.client_request_id.as_str()));
    }
}

/// Graph's error answer, with its correlation ids in the body and the headers, and
/// `Retry-After` (whole seconds) when given.
pub(crate) fn graph_error(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
    ids: &GraphIds,
    now: OffsetDateTime,
) -> HttpResponse {
    let body = GraphErrorBody {
        error: GraphError {
            code: code.to_owned(),
            message: message.to_owned(),
            inner_error: Some(GraphInnerError {
                date: Some(graph_date(now)),
                request_id: Some(ids.request_id.clone()),
                client_request_id: Some(ids.client_request_id.clone()),
            }),
        },
    };
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, JSON_UTF8));
    ids.stamp(&mut response);
    if let Some(wait) = retry_after {
        response.insert_header((
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        ));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        ));
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
