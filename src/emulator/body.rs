//! Reading request bodies with a hard size limit, so that a huge or endless body costs at most
//! [`BODY_LIMIT`] bytes and gets an upstream-shaped answer instead of actix's plain-text one.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures::StreamExt;

/// Largest request body the emulator reads (Entra's forms are a few hundred bytes).
pub(crate) const BODY_LIMIT: usize = 16 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than [`BODY_LIMIT`] (declared or actual).
    #[error("the request body exceeds {BODY_LIMIT} bytes")]
    TooLarge,
    /// The connection failed or the encoding was corrupt mid-body.
    #[error("the request body could not be read")]
    Unreadable,
}

/// Whether the request declares a body longer than the limit (checked before reading).
pub(crate) fn declared_too_large(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > BODY_LIMIT as u64)
}

/// Reads the whole body, refusing it as soon as it passes the limit.
pub(crate) async fn read_limited(
    request: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Vec<u8>, BodyError> {
    if declared_too_large(request) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
