//! What Microsoft Graph's answers share: its error body (`{error: {code, message, innerError:
//! {request-id, date}}}`, `request-id` the correlation id) and 206 Partial Content, which Graph
//! sends when one of the providers behind it failed: the answer still holds what the others gave.

use super::{clipped, Dialect, ErrorFacts};
use crate::wire::GraphErrorBody;

/// Graph's answers: 200, and 206 read like it; errors in Graph's body.
pub(super) const DIALECT: Dialect = Dialect {
    partial_content: true,
    error: error_facts,
};

/// The facts of a Graph error body.
fn error_facts(body: &[u8]) -> Option<ErrorFacts> {
    let error = serde_json::from_slice::<GraphErrorBody>(body).ok()?.error;
    let (correlation_id, date) = error
        .inner_error
        .map_or((None, None), |inner| (inner.request_id, inner.date));
    Some(ErrorFacts {
        code: error.code,
        message: clipped(&error.message),
        correlation_id,
        date,
    })
}
