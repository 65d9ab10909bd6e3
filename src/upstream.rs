//! The upstream sources: the one shared HTTPS client, and behind [`ScoreSource`] the one call that
//! reads a tenant's score with a bearer token — today Defender's `GET /api/configurationScore`.
//!
//! This is the narrow interface to Microsoft (`MDE-API.md` warns the API may retire; `DESIGN.md`,
//! turn 2, adds Defender's exposure score and Graph's secure score as further sources): a source
//! turns one HTTP exchange into a [`Reading`] or a [`CallFailure`] that states the facts (status,
//! `Retry-After`, a secret-free detail), and names its metric, its token scope and the upstream
//! service whose quota it spends. It decides nothing: no retries, deadlines, quotas, tokens or
//! cool-downs — the policy stack ([`crate::policy`]) owns those, in one place.
//! Correlation ids (`target`) are logged; tokens and secrets never are.

use crate::config::UpstreamSettings;
use crate::tenants::Tenant;
use crate::token::BearerToken;
use crate::wire::{ConfigurationScore, DefenderErrorBody, CONFIGURATION_SCORE_PATH};
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};

/// Longest cool-down a Defender `Retry-After` may impose: anything longer (or unreadable as a
/// number of seconds or an HTTP-date) is taken as one hour. A hostile or broken upstream must not
/// park a tenant for years, nor push an `Instant` past what the clock can represent.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` value (RFC 9110 §10.2.3): whole seconds, or an HTTP-date measured from
/// `now`. Bounded to `1 s ..= MAX_RETRY_AFTER`; `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits that overflow a u64 are "very long": capped like any other long wait.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let date =
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
                .ok()?;
        let date = SystemTime::from(date);
        // A date in the past means "now"; the floor below makes that one second.
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.clamp(Duration::from_secs(1), MAX_RETRY_AFTER))
}

/// One successful answer from Defender.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Raw score points.
    pub score: f64,
    /// Defender's `time`, verbatim.
    pub time: String,
    /// When the gateway received it.
    pub fetched_at: SystemTime,
}

/// Why a fetch failed, in the gateway's terms (`DESIGN.md`, error codes).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Entra refused the credentials (AADSTS codes): not retried.
    #[error("Entra ID refused the credentials: {detail}")]
    Credentials {
        /// Secret-free detail, with the AADSTS code.
        detail: String,
    },
    /// Defender answered 401 (after one renewal) or 403: consent, role or licence.
    #[error("{detail}")]
    Denied {
        /// 401 or 403.
        status: u16,
        /// Defender's code and message.
        detail: String,
    },
    /// Defender answered 429, or the tenant's quota or cool-down forbids calling now.
    #[error("Defender is throttling this tenant; retry after {} s", retry_after.as_secs())]
    Throttled {
        /// How long until a call may be made.
        retry_after: Duration,
    },
    /// Defender failed (5xx), answered something unusable, or could not be reached, after retries.
    #[error("{detail}")]
    Failed {
        /// What went wrong, secret-free.
        detail: String,
    },
    /// No answer within the deadline.
    #[error("no answer from Defender within the deadline")]
    Timeout,
}

impl UpstreamError {
    /// The gateway's stable error code for this failure (`DESIGN.md`, error codes); also the
    /// `outcome` label of `scoregate_fetches_total`.
    pub fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            Self::Credentials { .. } | Self::Denied { .. } => Code::UpstreamAuth,
            Self::Failed { .. } => Code::UpstreamError,
            Self::Throttled { .. } => Code::UpstreamThrottled,
            Self::Timeout => Code::UpstreamTimeout,
        }
    }
}

/// Builds the one HTTPS client shared by every upstream call and every credential.
///
/// rustls with the system roots plus, when configured, the extra CA certificates (the emulator's,
/// or a corporate TLS proxy's). Connections are pooled per host.
pub fn http_client(
    settings: &UpstreamSettings,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("scoregate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(settings.max_in_flight.max(1));
    if let Some(pem) = extra_ca_pem {
        builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
    }
    builder.build()
}

/// A number the gateway serves per tenant, read from one upstream source (`DESIGN.md`, turn 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Defender's device (configuration) score: raw points, no maximum.
    Device,
}

impl Metric {
    /// The metric's name in the API (`metric=device`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
        }
    }
}

/// An upstream service whose per-tenant limits several sources may share: Defender's 100/min and
/// 1,500/h cover every Defender score of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamService {
    /// Microsoft Defender for Endpoint's API.
    Defender,
}

impl UpstreamService {
    /// The service's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Defender => "defender",
        }
    }
}

/// Why one call to a source produced no reading: the facts, before any retry decision (that is
/// [`crate::policy::classify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The source answered with a status other than 200.
    Status {
        /// The HTTP status.
        status: u16,
        /// The bounded `Retry-After`, when the answer carried a readable one.
        retry_after: Option<Duration>,
        /// The source's error code and message, secret-free and bounded.
        detail: String,
    },
    /// The source answered 200 with a body that holds no usable score.
    Unusable {
        /// What is wrong with it.
        detail: String,
    },
    /// The source could not be reached (connection, TLS, reset).
    Transport {
        /// What went wrong, without URLs.
        detail: String,
    },
}

/// One upstream call that reads a tenant's score: the seam where more sources plug in.
#[async_trait::async_trait]
pub trait ScoreSource: Send + Sync {
    /// The metric this source reads.
    fn metric(&self) -> Metric;
    /// The service whose per-tenant quota a call spends.
    fn service(&self) -> UpstreamService;
    /// The OAuth scope of the bearer token a call needs for `tenant`.
    fn scope(&self, tenant: &Tenant) -> String;
    /// Makes one call for `tenant` with `token`. No retries and no deadline: the caller bounds it.
    async fn call(&self, tenant: &Tenant, token: &BearerToken) -> Result<Reading, CallFailure>;
}

/// Defender's device score, `GET {api_base}/api/configurationScore`.
pub struct DefenderConfigurationScore {
    /// The shared HTTPS client (also every credential's transport).
    http: reqwest::Client,
}

impl DefenderConfigurationScore {
    /// The source over the shared client.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

#[async_trait::async_trait]
impl ScoreSource for DefenderConfigurationScore {
    fn metric(&self) -> Metric {
        Metric::Device
    }

    fn service(&self) -> UpstreamService {
        UpstreamService::Defender
    }

    fn scope(&self, tenant: &Tenant) -> String {
        tenant.scope.clone()
    }

    async fn call(&self, tenant: &Tenant, token: &BearerToken) -> Result<Reading, CallFailure> {
        let url = tenant
            .api_base
            .join(CONFIGURATION_SCORE_PATH)
            .map_err(|error| CallFailure::Unusable {
                detail: format!("bad API base: {error}"),
            })?;
        let exchange = async {
            let response = self
                .http
                .get(url)
                .bearer_auth(token.secret())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, body))
        };
        let (status, retry_after, body) =
            exchange.await.map_err(|error| CallFailure::Transport {
                detail: format!(
                    "cannot reach Defender: {}",
                    crate::telemetry::error_chain(&error.without_url())
                ),
            })?;
        read_answer(tenant, status, retry_after, &body)
    }
}

/// Reads Defender's answer: a reading, or the facts of its refusal (logged with Defender's
/// correlation id, for a support case).
fn read_answer(
    tenant: &Tenant,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Reading, CallFailure> {
    if status == StatusCode::OK {
        return match serde_json::from_slice::<ConfigurationScore>(body) {
            Ok(answer) if answer.score.is_finite() => Ok(Reading {
                score: answer.score,
                time: answer.time,
                fetched_at: SystemTime::now(),
            }),
            Ok(_) => Err(CallFailure::Unusable {
                detail: "Defender answered a score that is not a finite number".to_owned(),
            }),
            Err(error) => {
                tracing::warn!(tenant = %tenant.id, "Defender answered 200 with an unusable body: {error}");
                Err(CallFailure::Unusable {
                    detail: format!("Defender answered an unusable body: {error}"),
                })
            }
        };
    }
    let error = serde_json::from_slice::<DefenderErrorBody>(body)
        .ok()
        .map(|body| body.error);
    let code = error.as_ref().map_or("", |e| e.code.as_str());
    let message: String = error
        .as_ref()
        .map_or("", |e| e.message.as_str())
        .chars()
        .take(200)
        .collect();
    let correlation = error.as_ref().and_then(|e| e.target.clone());
    tracing::warn!(
        tenant = %tenant.id,
        status = status.as_u16(),
        code,
        correlation_id = correlation.as_deref().unwrap_or("-"),
        "Defender refused the call: {message}"
    );
    if status == StatusCode::BAD_REQUEST {
        tracing::error!(tenant = %tenant.id, "Defender rejected our request as malformed: this is a scoregate bug");
    }
    let detail = if code.is_empty() {
        format!("Defender answered {status}")
    } else {
        format!("Defender answered {} {code}: {message}", status.as_u16())
    };
    Err(CallFailure::Status {
        status: status.as_u16(),
        retry_after,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_bounded() {
        let now = at(1_000_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("7200", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("9999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        // More digits than a u64 holds is still "very long", not "unreadable".
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_as_an_http_date_is_measured_from_now() {
        // Sun, 09 Sep 2001 01:46:40 GMT is 1,000,000,000 s after the epoch.
        let now = at(1_000_000_000);
        assert_eq!(
            parse_retry_after("Sun, 09 Sep 2001 01:47:40 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 09 Sep 2001 01:00:00 GMT", now),
            Some(Duration::from_secs(1)),
            "a date in the past means retry now (at least 1 s)"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn an_unreadable_retry_after_is_ignored() {
        let now = at(1_000_000_000);
        for value in ["", "-5", "1.5", "soon", "30s", "+30"] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
    }
}
