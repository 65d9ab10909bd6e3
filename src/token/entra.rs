//! Entra ID's error answers, as the gateway reads them: the [`EntraErrors`] policy that works
//! around azure_identity's parsing of Entra's error bodies, the classification of a failed
//! `get_token` into [`TokenError`], and the redaction of what callers see (ids cut, GUIDs
//! replaced, one short sentence) while Entra's trace and correlation ids go to the log.
//!
//! It deliberately does not build credentials ([`super::identity`]) or decide what to do about a
//! failure (the policy stack's classifier, [`crate::policy`], decides whether to retry).

use super::TokenError;
use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::error::Error as _;
use std::sync::Arc;

/// Turns every non-2xx answer of the token endpoint into azure_core's `HttpResponse` error,
/// before azure_identity parses it.
///
/// azure_identity 1.0 reads Entra's error body into a borrowed `&str`, which fails for every
/// real `error_description` (they hold escaped `\r\n` before the trace and correlation ids):
/// the status and AADSTS codes are then lost in a `DataConversion` error, and a revoked secret
/// would look like a transient failure. An HTML page from a proxy loses its status the same way.
/// This policy parses the body itself (owned strings) and fails the call with the status, the
/// codes (comma-separated numbers, as azure_identity would) and the description.
#[derive(Debug)]
pub(super) struct EntraErrors;

#[async_trait::async_trait]
impl Policy for EntraErrors {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "no transport after the Entra error policy",
            ));
        };
        let response = first.send(ctx, request, rest).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let raw = response.try_into_raw_response().await?;
        let body: EntraErrorBody = serde_json::from_slice(raw.body().as_ref()).unwrap_or_default();
        let error_code = (!body.error_codes.is_empty()).then(|| {
            body.error_codes
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
        Err(azure_core::Error::new(
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response: Some(Box::new(raw)),
            },
            body.error_description,
        ))
    }
}

/// The parts of Entra's error body this module reads (`crate::wire::EntraErrorBody` requires
/// fields that proxies and gateways in front of Entra do not send).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct EntraErrorBody {
    error_description: String,
    error_codes: Vec<i64>,
}

/// Longest detail taken from an Entra message.
pub(super) const MAX_DETAIL_CHARS: usize = 200;

/// Maps an azure_core error from `get_token` to a [`TokenError`].
///
/// azure_identity wraps every failure as `Credential` ("… authentication failed. …" plus a
/// troubleshooting link) around the real cause: an `HttpResponse` error for Entra's non-2xx
/// answers (`error_code` = the AADSTS codes, message = `error_description`), a
/// `Connection`/`Io` error from the transport, or `DataConversion` for a body that is not
/// JSON. So the chain is walked down to the first error that says what happened.
pub(super) fn classify(error: &azure_core::Error) -> TokenError {
    let mut current = error;
    loop {
        match current.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let status = u16::from(*status);
                let description = first_sentence(&current.to_string());
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    let codes = match error_code {
                        Some(codes) => codes
                            .split(',')
                            .map(|code| format!("AADSTS{}", code.trim()))
                            .collect::<Vec<_>>()
                            .join(","),
                        None => raw_response
                            .as_deref()
                            .and_then(|response| oauth_error(response.body().as_ref()))
                            .unwrap_or_default(),
                    };
                    let detail = if description.is_empty() {
                        format!("the token endpoint answered {status}")
                    } else {
                        description
                    };
                    return TokenError::Rejected {
                        status,
                        codes,
                        detail,
                    };
                }
                let detail = if description.is_empty() {
                    format!("the token endpoint answered {status}")
                } else {
                    format!("the token endpoint answered {status}: {description}")
                };
                return TokenError::Unavailable { detail };
            }
            ErrorKind::Connection | ErrorKind::Io => {
                return TokenError::Unavailable {
                    detail: transport_detail(current),
                }
            }
            ErrorKind::DataConversion => {
                return TokenError::Unavailable {
                    detail: "the token endpoint's answer is not a token response".into(),
                }
            }
            ErrorKind::Credential | ErrorKind::Other => {}
        }
        match current
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
        {
            Some(inner) => current = inner,
            None => break,
        }
    }
    // No transport or HTTP cause: the credential itself failed (validation, signing).
    TokenError::Invalid {
        detail: first_sentence(&current.to_string()),
    }
}

/// The deepest azure_core error of a chain (the one without azure_identity's wrapping).
pub(super) fn innermost(error: &azure_core::Error) -> &azure_core::Error {
    let mut current = error;
    while let Some(inner) = current
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
    {
        current = inner;
    }
    current
}

/// A URL-free description of a transport failure: what kind, and the root cause (the I/O or
/// TLS error, e.g. "invalid peer certificate: UnknownIssuer").
fn transport_detail(error: &azure_core::Error) -> String {
    let mut what = match error.kind() {
        ErrorKind::Connection => "cannot connect to the token endpoint",
        _ => "the token request failed",
    };
    let mut root: Option<String> = None;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(reqwest) = cause.downcast_ref::<reqwest::Error>() {
            if reqwest.is_timeout() {
                what = "the token endpoint did not answer in time";
            } else if reqwest.is_connect() {
                what = "cannot connect to the token endpoint";
            }
        } else if cause.downcast_ref::<azure_core::Error>().is_none() {
            // reqwest's own message names the URL; the causes below it do not.
            root = Some(cause.to_string());
        }
        source = cause.source();
    }
    match root {
        Some(root) if !root.is_empty() => format!("{what}: {}", first_sentence(&root)),
        _ => what.to_owned(),
    }
}

/// The OAuth `error` field of an Entra error body (`invalid_client`), if it has one.
fn oauth_error(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
    }
    serde_json::from_slice::<OAuthError>(body)
        .ok()
        .map(|body| body.error)
        .filter(|error| {
            !error.is_empty()
                && error.len() <= 64
                && error
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Entra's trace and correlation ids of a refusal, as Entra's JSON body gives them.
pub(super) struct EntraIds {
    /// Entra's `trace_id`, or empty when it is not a GUID.
    pub(super) trace_id: String,
    /// Entra's `correlation_id`, or empty when it is not a GUID.
    pub(super) correlation_id: String,
}

/// The ids of the Entra error body in `error`'s chain, when they are GUIDs (anything else is
/// not logged: the body is the network's, and a log line must not be forged from it).
pub(super) fn entra_ids(error: &azure_core::Error) -> Option<EntraIds> {
    #[derive(serde::Deserialize)]
    struct Ids {
        #[serde(default)]
        trace_id: String,
        #[serde(default)]
        correlation_id: String,
    }
    let mut current = error;
    loop {
        if let ErrorKind::HttpResponse {
            raw_response: Some(response),
            ..
        } = current.kind()
        {
            let ids: Ids = serde_json::from_slice(response.body().as_ref()).ok()?;
            let is_guid = |id: &str| id.len() == 36 && uuid::Uuid::parse_str(id).is_ok();
            return (is_guid(&ids.trace_id) || is_guid(&ids.correlation_id)).then(|| EntraIds {
                trace_id: if is_guid(&ids.trace_id) {
                    ids.trace_id
                } else {
                    String::new()
                },
                correlation_id: if is_guid(&ids.correlation_id) {
                    ids.correlation_id
                } else {
                    String::new()
                },
            });
        }
        current = current
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())?;
    }
}

/// What replaces an id (GUID) in a detail shown to callers.
const REDACTED_ID: &str = "(id removed)";

/// Entra's text without what a caller has no need for: everything from the first `Trace ID:`,
/// `Correlation ID:` or `Timestamp:` on (Entra appends them, on new lines or the same one), and
/// every GUID (app, client and tenant ids), which becomes [`REDACTED_ID`]. The AADSTS code and
/// the message stay. The ids go to the log instead (see [`super::TokenSource::token`]).
pub(super) fn redact(message: &str) -> String {
    let cut = ["Trace ID:", "Correlation ID:", "Timestamp:"]
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .unwrap_or(message.len());
    let message = &message[..cut];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((start, end)) = find_guid(rest) {
        out.push_str(&rest[..start]);
        out.push_str(REDACTED_ID);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Byte range of the first GUID (`8-4-4-4-12` hex digits, any case, not part of a longer run of
/// hex digits) in `text`.
fn find_guid(text: &str) -> Option<(usize, usize)> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let bytes = text.as_bytes();
    let matches_at = |start: usize| {
        let mut position = start;
        for (index, group) in GROUPS.iter().enumerate() {
            if index > 0 {
                if bytes.get(position) != Some(&b'-') {
                    return false;
                }
                position += 1;
            }
            let Some(digits) = bytes.get(position..position + group) else {
                return false;
            };
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            position += group;
        }
        true
    };
    let hex_at = |index: usize| bytes.get(index).is_some_and(u8::is_ascii_hexdigit);
    (0..bytes.len().saturating_sub(LEN - 1))
        .find(|&start| {
            (start == 0 || !hex_at(start - 1)) && !hex_at(start + LEN) && matches_at(start)
        })
        .map(|start| (start, start + LEN))
}

/// The first line and sentence of a message, [redacted](redact), at most [`MAX_DETAIL_CHARS`]
/// characters: Entra's descriptions go on with trace and correlation ids and timestamps, and
/// name the app and the tenant by id.
pub(super) fn first_sentence(message: &str) -> String {
    let message = redact(message);
    let line = message.trim().lines().next().unwrap_or_default().trim();
    let sentence = match line.find(". ") {
        Some(end) => &line[..=end],
        None => line,
    };
    if sentence.chars().count() <= MAX_DETAIL_CHARS {
        sentence.to_owned()
    } else {
        let mut short: String = sentence.chars().take(MAX_DETAIL_CHARS).collect();
        short.push('…');
        short
    }
}
