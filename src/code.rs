//! The gateway's stable error codes: each one's text, the HTTP status it is answered with, and
//! its OpenAPI schema, written once.
//!
//! Every place a code appears reads it from here: problem bodies and per-item errors of the API,
//! the `outcome` label of `scoregate_fetches_total`, the last fetch of a tenant. The components
//! that fail (upstream, cache) name their failure's code without knowing HTTP; the status is a
//! plain number here, and only the API's error edge turns it into a response.
//!
//! It deliberately does not build responses or know actix-web (`api::error` does), nor decide
//! which failure gets which code (each failing component does, where the facts are).

use serde::{Serialize, Serializer};
use std::fmt;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A stable, machine-readable error code (the table of `docs/api/errors.md`). Callers branch on it; its
/// text never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Bad path, query or header (also a URL or headers too large: then 414 or 431).
    InvalidRequest,
    /// No API key, one that matches no configured key, an invalid or expired Entra ID token,
    /// or credentials that disagree.
    Unauthenticated,
    /// A valid Entra ID token whose app, identity or roles map to no configured caller.
    Forbidden,
    /// No tenant with this id, or one the caller may not see.
    UnknownTenant,
    /// The tenant does not have the metric asked for (`metric=`); the detail lists its metrics.
    MetricNotEnabled,
    /// The tenant has no Secure Score control with this id.
    UnknownControl,
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The caller's key exceeded its request rate.
    RateLimited,
    /// Microsoft refused the tenant's credentials (Entra ID), or the source (Defender or Microsoft
    /// Graph) refused the call (401 after a renewal, 403): consent, role or licence.
    UpstreamAuth,
    /// The source failed, answered something unusable, or could not be reached, after retries.
    UpstreamError,
    /// The source throttles the tenant (429), or the tenant's quota or cool-down forbids calling.
    UpstreamThrottled,
    /// The source did not answer within the deadline.
    UpstreamTimeout,
    /// The score endpoint answered 404 or 410: the API is retired (the Defender API after
    /// 2027-02-01) or not offered in the tenant's cloud; the detail names the tenant's other
    /// metrics.
    UpstreamGone,
    /// The caller's deadline (or the server's request timeout) passed first.
    DeadlineExceeded,
    /// The gateway is stopping and cancelled the work this request waited for.
    ShuttingDown,
    /// History is turned off (`[history] enabled = false`): retrying will not help.
    HistoryDisabled,
    /// The history database cannot be reached now; readings are buffered meanwhile.
    HistoryUnavailable,
    /// Alerts need the history database, which is turned off: retrying will not help.
    AlertsDisabled,
    /// A bug; the detail is in the gateway's log only.
    Internal,
}

impl Code {
    /// Every code, in the order of the error table.
    pub const ALL: [Self; 20] = [
        Self::InvalidRequest,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::UnknownTenant,
        Self::MetricNotEnabled,
        Self::UnknownControl,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RateLimited,
        Self::UpstreamAuth,
        Self::UpstreamError,
        Self::UpstreamThrottled,
        Self::UpstreamTimeout,
        Self::UpstreamGone,
        Self::DeadlineExceeded,
        Self::ShuttingDown,
        Self::HistoryDisabled,
        Self::HistoryUnavailable,
        Self::AlertsDisabled,
        Self::Internal,
    ];

    /// The code as callers see it (`upstream_auth`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::UnknownTenant => "unknown_tenant",
            Self::MetricNotEnabled => "metric_not_enabled",
            Self::UnknownControl => "unknown_control",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::UpstreamAuth => "upstream_auth",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamThrottled => "upstream_throttled",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamGone => "upstream_gone",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ShuttingDown => "shutting_down",
            Self::HistoryDisabled => "history_disabled",
            Self::HistoryUnavailable => "history_unavailable",
            Self::AlertsDisabled => "alerts_disabled",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status answered with this code. The one exception is decided by the API edge:
    /// `invalid_request` for a URL or headers too large is answered 414 or 431.
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::UnknownTenant
            | Self::NotFound
            | Self::MetricNotEnabled
            | Self::UnknownControl
            | Self::HistoryDisabled
            | Self::AlertsDisabled => 404,
            Self::MethodNotAllowed => 405,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::UpstreamAuth | Self::UpstreamError | Self::UpstreamGone => 502,
            Self::UpstreamThrottled | Self::ShuttingDown | Self::HistoryUnavailable => 503,
            Self::UpstreamTimeout | Self::DeadlineExceeded => 504,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For label values and other `&'static str` sinks (`scoregate_fetches_total{outcome}`).
impl From<Code> for &'static str {
    fn from(code: Code) -> Self {
        code.as_str()
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

// Written by hand rather than derived so that the strings exist once, in `as_str`.
impl utoipa::PartialSchema for Code {
    fn schema() -> RefOr<Schema> {
        let table = Self::ALL
            .iter()
            .map(|code| format!("`{code}` ({})", code.status()))
            .collect::<Vec<_>>()
            .join(", ");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "Stable machine-readable error code, with the HTTP status it is answered with: \
                 {table}. `invalid_request` is also answered 414 (URL too long) or 431 (headers \
                 too large)."
            )))
            .enum_values(Some(Self::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for Code {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_text_and_texts_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
    }

    #[test]
    fn the_schema_is_a_string_enum_of_every_code() {
        let schema = serde_json::to_value(<Code as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["type"], "string");
        let values: Vec<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(schema["enum"], serde_json::json!(values));
        assert!(schema["description"]
            .as_str()
            .unwrap()
            .contains("`upstream_throttled` (503)"));
    }
}
