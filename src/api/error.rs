//! The gateway's HTTP semantics of failure: every error a caller can see, its status, its stable
//! code and its RFC 9457 problem body. This file is the error table of `docs/api/errors.md` in code.
//!
//! Handlers return [`ApiError`]; extractor failures, unknown routes and wrong methods are turned
//! into it too, so that no plain-text actix error ever reaches a caller. Internal causes are
//! logged here, once, and never returned.

use crate::cache::ScoreError;
use crate::code::Code;
use crate::service::ServiceError;
use crate::upstream::{Metric, UpstreamError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;
use std::time::Duration;
use utoipa::ToSchema;

/// Media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error as a caller sees it.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// Bad path, query or header.
    InvalidRequest(String),
    /// The URL or the headers are larger than accepted (414 or 431, code `invalid_request`).
    TooLarge {
        /// 414 or 431.
        status: StatusCode,
        /// Which limit was passed.
        detail: String,
    },
    /// No API key, one that matches no configured key, a bad Entra ID token, or credentials
    /// that disagree.
    Unauthenticated(Credentials),
    /// A valid Entra ID token that maps to no configured caller (403 `forbidden`).
    Forbidden,
    /// The caller's key exceeded its request rate.
    RateLimited {
        /// Time until one more request is allowed.
        retry_after: Duration,
        /// The key's requests per minute.
        limit: u32,
    },
    /// The whole request took longer than the server's request timeout.
    RequestTimeout,
    /// No tenant with this id, or one the caller may not see.
    UnknownTenant(String),
    /// The tenant exists (and the caller may see it) but does not have the metric asked for.
    MetricNotEnabled {
        /// The tenant involved.
        tenant: String,
        /// Which metric, and the tenant's metrics.
        detail: String,
    },
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The score could not be fetched and nothing cached may be served.
    Upstream {
        /// The tenant involved.
        tenant: String,
        /// What went wrong upstream.
        error: UpstreamError,
    },
    /// The caller's deadline passed before the score was ready.
    DeadlineExceeded {
        /// The tenant involved.
        tenant: String,
    },
    /// The gateway is stopping and the work this request waited for was cancelled; retry (on
    /// another instance, or once this one is back).
    ShuttingDown,
    /// `[history] enabled = false`: the history routes do not exist on this gateway (404, not
    /// 503: retrying will not help).
    HistoryDisabled,
    /// The history database is not reachable now (it is retried in the background); the cause
    /// goes to the log only.
    HistoryUnavailable(String),
    /// The history database is known to be away, or too many history reads run at once: answered
    /// at once, without waiting for the database (503 `history_unavailable`).
    HistoryBusy {
        /// When to try again.
        retry_after: Duration,
        /// Which of the two.
        detail: &'static str,
    },
    /// A history read took longer than its deadline (504 `deadline_exceeded`).
    HistoryDeadline(Duration),
    /// Alerts need the history database, which is turned off (404: retrying will not help).
    AlertsDisabled,
    /// No history of this control in this tenant (404 `unknown_control`).
    UnknownControl,
    /// A bug; the detail goes to the log only.
    Internal(String),
}

/// Why a caller of a protected route is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No credential was presented.
    Missing,
    /// The key presented is not a configured one.
    Invalid,
    /// The request carries credentials that disagree (two different keys, a key beside a
    /// malformed `Authorization` header, a header given twice): refused rather than resolved,
    /// with why.
    Conflicting(&'static str),
    /// An Entra ID access token that is not valid, with why (the `error_description`).
    Token(crate::auth::entra::TokenRejected),
}

/// `Retry-After` of a `shutting_down` answer: long enough for a load balancer to notice, short
/// enough that a retry soon reaches another instance or the restarted one.
const SHUTTING_DOWN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Retry-After` of a `history_unavailable` answer: about the writer's longest back-off.
const HISTORY_RETRY_AFTER: Duration = Duration::from_secs(10);

impl From<crate::alerts::AlertError> for ApiError {
    fn from(error: crate::alerts::AlertError) -> Self {
        match error {
            crate::alerts::AlertError::History(error) => error.into(),
            // A statement failing is the database being away (or a bug, which the log shows).
            other => ApiError::HistoryUnavailable(crate::telemetry::error_chain(&other)),
        }
    }
}

/// `Retry-After` of a `history_unavailable` answer for too many reads at once.
const HISTORY_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<crate::history::HistoryError> for ApiError {
    fn from(error: crate::history::HistoryError) -> Self {
        use crate::history::HistoryError;
        match error {
            HistoryError::Down { retry_after } => ApiError::HistoryBusy {
                retry_after,
                detail: "The history database could not be reached moments ago; retry after \
                         Retry-After seconds.",
            },
            HistoryError::Busy => ApiError::HistoryBusy {
                retry_after: HISTORY_BUSY_RETRY_AFTER,
                detail: "Too many history queries run at once; retry after Retry-After seconds.",
            },
            HistoryError::Deadline { after } => ApiError::HistoryDeadline(after),
            other => ApiError::HistoryUnavailable(crate::telemetry::error_chain(&other)),
        }
    }
}

/// The stable code of a score that cannot be served, for the per-item errors of `/scores`: the
/// same as the single-tenant route answers.
pub fn score_code(error: &ScoreError) -> Code {
    match error {
        ScoreError::Upstream(error) => error.code(),
        ScoreError::Deadline => Code::DeadlineExceeded,
        ScoreError::ShuttingDown => Code::ShuttingDown,
        ScoreError::Internal => Code::Internal,
        ScoreError::MetricNotEnabled { .. } => Code::MetricNotEnabled,
    }
}

/// The status a code is answered with, as actix's type.
pub fn status_of(code: Code) -> StatusCode {
    // Every status in the table is a valid one; 500 only if the table were ever wrong.
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl ApiError {
    /// Turns a use-case failure for `tenant` into what the caller sees.
    pub fn from_service(error: ServiceError) -> Self {
        match error {
            ServiceError::UnknownTenant(id) => ApiError::UnknownTenant(id),
            ServiceError::Score(ScoreError::Upstream(error)) => ApiError::Upstream {
                tenant: String::new(),
                error,
            },
            ServiceError::Score(ScoreError::Deadline) => ApiError::DeadlineExceeded {
                tenant: String::new(),
            },
            ServiceError::Score(ScoreError::ShuttingDown) => ApiError::ShuttingDown,
            ServiceError::Score(error @ ScoreError::Internal) => {
                ApiError::Internal(format!("a score fetch: {error}"))
            }
            ServiceError::Score(ScoreError::MetricNotEnabled {
                tenant,
                metric,
                enabled,
            }) => ApiError::MetricNotEnabled {
                tenant: tenant.to_string(),
                detail: metric_not_enabled_detail(metric, &enabled),
            },
        }
    }

    /// Names the tenant the error is about.
    pub fn for_tenant(self, id: &str) -> Self {
        match self {
            ApiError::Upstream { error, .. } => ApiError::Upstream {
                tenant: id.to_owned(),
                error,
            },
            ApiError::DeadlineExceeded { .. } => ApiError::DeadlineExceeded {
                tenant: id.to_owned(),
            },
            other => other,
        }
    }

    /// The stable code.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidRequest(_) | ApiError::TooLarge { .. } => Code::InvalidRequest,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Forbidden => Code::Forbidden,
            ApiError::RateLimited { .. } => Code::RateLimited,
            ApiError::RequestTimeout
            | ApiError::DeadlineExceeded { .. }
            | ApiError::HistoryDeadline(_) => Code::DeadlineExceeded,
            ApiError::UnknownTenant(_) => Code::UnknownTenant,
            ApiError::MetricNotEnabled { .. } => Code::MetricNotEnabled,
            ApiError::NotFound => Code::NotFound,
            ApiError::MethodNotAllowed => Code::MethodNotAllowed,
            ApiError::Upstream { error, .. } => error.code(),
            ApiError::ShuttingDown => Code::ShuttingDown,
            ApiError::HistoryDisabled => Code::HistoryDisabled,
            ApiError::HistoryUnavailable(_) | ApiError::HistoryBusy { .. } => {
                Code::HistoryUnavailable
            }
            ApiError::AlertsDisabled => Code::AlertsDisabled,
            ApiError::UnknownControl => Code::UnknownControl,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// HTTP status and stable code: the code's status, except for the size limits (414, 431).
    pub fn status_and_code(&self) -> (StatusCode, Code) {
        let code = self.code();
        match self {
            ApiError::TooLarge { status, .. } => (*status, code),
            _ => (status_of(code), code),
        }
    }

    /// The problem's title: fixed per kind, except that an upstream failure names its service.
    fn title(&self) -> String {
        let title = match self {
            ApiError::InvalidRequest(_) | ApiError::TooLarge { .. } => "Invalid request",
            ApiError::Unauthenticated(_) => "Unauthenticated",
            ApiError::Forbidden => "Forbidden",
            ApiError::RateLimited { .. } => "Rate limited",
            ApiError::RequestTimeout => "Deadline exceeded",
            ApiError::UnknownTenant(_) => "Unknown tenant",
            ApiError::MetricNotEnabled { .. } => "Metric not enabled for this tenant",
            ApiError::NotFound => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Upstream { error, .. } => return upstream_title(error),
            ApiError::DeadlineExceeded { .. } => "Deadline exceeded",
            ApiError::ShuttingDown => "Shutting down",
            ApiError::HistoryDisabled => "History disabled",
            ApiError::HistoryUnavailable(_) | ApiError::HistoryBusy { .. } => "History unavailable",
            ApiError::HistoryDeadline(_) => "Deadline exceeded",
            ApiError::AlertsDisabled => "Alerts disabled",
            ApiError::UnknownControl => "Unknown control",
            ApiError::Internal(_) => "Internal error",
        };
        title.to_owned()
    }

    fn detail(&self) -> String {
        match self {
            ApiError::InvalidRequest(detail) | ApiError::TooLarge { detail, .. } => detail.clone(),
            ApiError::Unauthenticated(Credentials::Missing) => {
                "An API key or an Entra ID access token is required: send `Authorization: Bearer \
                 <key or token>` or `X-API-Key: <key>`."
                    .to_owned()
            }
            ApiError::Unauthenticated(Credentials::Invalid) => {
                "The API key is not valid.".to_owned()
            }
            ApiError::Unauthenticated(Credentials::Conflicting(why)) => {
                format!("Conflicting credentials: {why}. Send one credential, in one header.")
            }
            ApiError::Unauthenticated(Credentials::Token(why)) => {
                format!("The access token is not valid: {why}.")
            }
            ApiError::Forbidden => "The access token is valid, but its application, identity \
                                    and roles map to no caller of this gateway."
                .to_owned(),
            ApiError::RateLimited { limit, .. } => {
                format!("This caller (API key or Entra ID caller) may make {limit} requests per minute; see Retry-After.")
            }
            ApiError::RequestTimeout => {
                "The request took longer than the server's request timeout.".to_owned()
            }
            // Says nothing about whether the tenant exists: the same words for both cases.
            ApiError::UnknownTenant(_) => "No tenant with this id.".to_owned(),
            ApiError::MetricNotEnabled { detail, .. } => detail.clone(),
            ApiError::NotFound => "No such route; see /openapi.json.".to_owned(),
            ApiError::MethodNotAllowed => "This route does not accept this method.".to_owned(),
            ApiError::Upstream { error, .. } => error.to_string(),
            ApiError::DeadlineExceeded { .. } => {
                "The score was not ready in time; the fetch goes on and will fill the cache."
                    .to_owned()
            }
            ApiError::ShuttingDown => {
                "The gateway is shutting down; retry after Retry-After seconds.".to_owned()
            }
            ApiError::HistoryDisabled => {
                "This gateway keeps no history ([history] enabled = false).".to_owned()
            }
            ApiError::HistoryUnavailable(_) => {
                "The history database cannot be reached now; retry after Retry-After seconds."
                    .to_owned()
            }
            ApiError::HistoryBusy { detail, .. } => (*detail).to_owned(),
            ApiError::HistoryDeadline(after) => format!(
                "The history query took longer than its deadline of {} ms; ask a shorter range \
                 or fewer tenants.",
                after.as_millis()
            ),
            ApiError::UnknownControl => {
                "This tenant has no history of a control with this id.".to_owned()
            }
            ApiError::AlertsDisabled => {
                "Alerts keep their state in the history database, which is turned off \
                 ([history] enabled = false)."
                    .to_owned()
            }
            ApiError::Internal(_) => {
                "An internal error occurred; see the gateway's log.".to_owned()
            }
        }
    }

    fn tenant(&self) -> Option<&str> {
        match self {
            ApiError::Upstream { tenant, .. }
            | ApiError::DeadlineExceeded { tenant }
            | ApiError::MetricNotEnabled { tenant, .. } => {
                Some(tenant.as_str()).filter(|t| !t.is_empty())
            }
            // Not echoed for unknown tenants: the body must not depend on the id asked for.
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Upstream {
                error: UpstreamError::Throttled { retry_after, .. },
                ..
            } => Some(*retry_after),
            ApiError::ShuttingDown => Some(SHUTTING_DOWN_RETRY_AFTER),
            ApiError::HistoryUnavailable(_) => Some(HISTORY_RETRY_AFTER),
            ApiError::HistoryBusy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The full response, with the request id in the body (the request-id middleware calls this).
    pub fn render(&self, request_id: &str) -> HttpResponse {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = self {
            tracing::error!(request_id, "internal error: {cause}");
        }
        if let ApiError::HistoryUnavailable(cause) = self {
            tracing::warn!(request_id, "history unavailable: {cause}");
        }
        let problem = Problem {
            r#type: format!("urn:scoregate:problem:{code}"),
            title: self.title(),
            status: status.as_u16(),
            detail: self.detail(),
            code,
            request_id: request_id.to_owned(),
            tenant: self.tenant().map(str::to_owned),
        };
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_JSON);
        if let Some(retry_after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, retry_after_seconds(retry_after)));
        }
        match self {
            ApiError::Unauthenticated(credentials) => {
                let challenge = match credentials {
                    Credentials::Missing => "Bearer realm=\"scoregate\"".to_owned(),
                    Credentials::Invalid => {
                        "Bearer realm=\"scoregate\", error=\"invalid_token\"".to_owned()
                    }
                    Credentials::Conflicting(_) => {
                        "Bearer realm=\"scoregate\", error=\"invalid_request\"".to_owned()
                    }
                    // RFC 6750: the description is fixed text (no quotes, no token content).
                    Credentials::Token(why) => format!(
                        "Bearer realm=\"scoregate\", error=\"invalid_token\", error_description=\"{why}\""
                    ),
                };
                response.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            ApiError::RateLimited { retry_after, limit } => {
                response.insert_header(("RateLimit-Limit", limit.to_string()));
                response.insert_header(("RateLimit-Remaining", "0"));
                response.insert_header(("RateLimit-Reset", retry_after_seconds(*retry_after)));
            }
            _ => {}
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.insert_header((header::ALLOW, HeaderValue::from_static("GET")));
        }
        response.json(problem)
    }
}

/// The title of an upstream failure, naming the service (Defender or Microsoft Graph) when the
/// failure is about one.
fn upstream_title(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Credentials { .. } | UpstreamError::Denied { .. } => {
            "Microsoft refused the tenant's credentials".to_owned()
        }
        UpstreamError::Failed { service, .. } => format!("{} failed", service.display_name()),
        UpstreamError::Throttled { service, .. } => {
            format!("{} is throttling this tenant", service.display_name())
        }
        UpstreamError::Timeout { service } => {
            format!("{} did not answer in time", service.display_name())
        }
        UpstreamError::Gone { .. } => "The upstream score API is gone".to_owned(),
    }
}

/// The detail of `metric_not_enabled`, also used by the items of `/scores`.
pub fn metric_not_enabled_detail(metric: Metric, enabled: &[Metric]) -> String {
    let enabled: Vec<&str> = enabled.iter().map(|metric| metric.as_str()).collect();
    format!(
        "This tenant does not have the {metric} metric; its metrics: {}. The metrics of a tenant \
         are set by `metrics` in the gateway's configuration.",
        enabled.join(", ")
    )
}

/// Whole seconds for `Retry-After`, rounded up and at least 1.
pub fn retry_after_seconds(wait: Duration) -> String {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1).to_string()
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, code) = self.status_and_code();
        write!(f, "{} {code}: {}", status.as_u16(), self.detail())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        // The request-id middleware re-renders with the id; this is the fallback without one.
        self.render("")
    }
}

/// An RFC 9457 problem: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:scoregate:problem:unknown_tenant",
    "title": "Unknown tenant",
    "status": 404,
    "detail": "No tenant with this id.",
    "code": "unknown_tenant",
    "request_id": "3f1c9a1e-8d0b-4a37-9a43-0f6f7c2b51d2"
}))]
pub struct Problem {
    /// A URI naming the problem type: `urn:scoregate:problem:{code}`.
    pub r#type: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this occurrence; never contains secrets.
    pub detail: String,
    /// Stable machine-readable code; `type` ends with it.
    pub code: Code,
    /// The request's id (the `X-Request-Id` header), for support.
    pub request_id: String,
    /// The tenant involved, when the problem concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryError;

    fn answer(error: HistoryError) -> (u16, Option<String>, serde_json::Value) {
        let response = ApiError::from(error).render("r");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures::executor::block_on(body).unwrap_or_default();
        let body = serde_json::from_slice(&body).unwrap_or_default();
        (status, retry_after, body)
    }

    fn upstream(error: UpstreamError) -> serde_json::Value {
        let response = ApiError::Upstream {
            tenant: "contoso".to_owned(),
            error,
        }
        .render("r");
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures::executor::block_on(body).unwrap_or_default();
        serde_json::from_slice(&body).unwrap_or_default()
    }

    #[test]
    fn upstream_problems_name_the_service_in_title_and_detail_and_keep_their_codes() {
        use crate::upstream::UpstreamService::{Defender, Graph};
        for (service, name) in [(Defender, "Defender"), (Graph, "Microsoft Graph")] {
            let throttled = upstream(UpstreamError::Throttled {
                service,
                retry_after: Duration::from_secs(30),
            });
            assert_eq!(throttled["code"], "upstream_throttled");
            assert_eq!(
                throttled["title"],
                format!("{name} is throttling this tenant")
            );
            assert_eq!(
                throttled["detail"],
                format!("{name} is throttling this tenant; retry after 30 s")
            );
            let timeout = upstream(UpstreamError::Timeout { service });
            assert_eq!(timeout["code"], "upstream_timeout");
            assert_eq!(timeout["title"], format!("{name} did not answer in time"));
            assert_eq!(
                timeout["detail"],
                format!("no answer from {name} within the deadline")
            );
            let failed = upstream(UpstreamError::Failed {
                service,
                detail: "x".to_owned(),
            });
            assert_eq!(failed["code"], "upstream_error");
            assert_eq!(failed["title"], format!("{name} failed"));
        }
        let graph = upstream(UpstreamError::Throttled {
            service: Graph,
            retry_after: Duration::from_secs(1),
        });
        assert!(!graph.to_string().contains("Defender"), "{graph}");
    }

    #[test]
    fn history_reads_refused_at_once_are_503_with_retry_after_and_late_ones_504() {
        let (status, retry_after, body) = answer(HistoryError::Busy);
        assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
        assert_eq!(body["code"], "history_unavailable");
        let (status, retry_after, body) = answer(HistoryError::Down {
            retry_after: Duration::from_millis(3_200),
        });
        assert_eq!((status, retry_after.as_deref()), (503, Some("4")));
        assert_eq!(body["code"], "history_unavailable");
        let (status, retry_after, body) = answer(HistoryError::Deadline {
            after: Duration::from_secs(5),
        });
        assert_eq!((status, retry_after), (504, None));
        assert_eq!(body["code"], "deadline_exceeded");
        assert!(body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("5000 ms"));
    }
}
