//! The upstream client: one shared HTTPS client, the Defender `GET /api/configurationScore` call,
//! the classification of its failures, and retries inside one deadline.
//!
//! This is the narrow interface to Microsoft (`MDE-API.md` warns the API may retire): everything
//! above it sees a [`Reading`] or an [`UpstreamError`], never HTTP. It decides *how* one fetch is
//! made — token, call, retries with jittered exponential back-off for transient failures, one token
//! renewal on a 401 — and nothing about *whether* to fetch (the cache and quota decide that).
//! Correlation ids (`target`) are logged; tokens and secrets never are.

use crate::config::UpstreamSettings;
use crate::metrics::{CallOutcome, Metrics};
use crate::quota::{Quota, QuotaError};
use crate::tenants::Tenant;
use crate::token::{TokenError, TokenSource};
use crate::wire::{ConfigurationScore, DefenderErrorBody, CONFIGURATION_SCORE_PATH};
use rand::Rng;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Longest cool-down a Defender `Retry-After` may impose: anything longer (or unreadable as a
/// number of seconds or an HTTP-date) is taken as one hour. A hostile or broken upstream must not
/// park a tenant for years, nor push an `Instant` past what the clock can represent.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Cool-down after a 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

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

/// Fetches scores from Defender: tokens, the call, classification and retries.
pub struct UpstreamClient {
    /// The shared HTTPS client (also every credential's transport).
    http: reqwest::Client,
    /// Tokens per tenant.
    tokens: TokenSource,
    /// Outbound limits: charged once per HTTP call to Defender, retries included.
    quota: Arc<Quota>,
    /// Timeouts and retry policy.
    settings: UpstreamSettings,
    /// Where calls, their latency and token acquisitions are counted.
    metrics: Arc<Metrics>,
    /// Token acquisitions at once, bounded like Defender calls (`max_in_flight`): a cold start of
    /// a thousand tenants must not open a thousand connections to Entra ID at the same instant.
    token_slots: tokio::sync::Semaphore,
}

/// What one attempt ended with, before the retry decision.
enum Attempt {
    Done(Reading),
    /// Worth another try after a back-off (5xx, transport failure, attempt timeout).
    Transient(String),
    /// Defender answered 401: the token may be stale.
    Unauthorized(String),
    Final(UpstreamError),
}

impl UpstreamClient {
    /// Creates the client; `http` must be the client the token source uses too.
    pub fn new(
        http: reqwest::Client,
        tokens: TokenSource,
        quota: Arc<Quota>,
        settings: UpstreamSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            tokens,
            quota,
            token_slots: tokio::sync::Semaphore::new(settings.max_in_flight.max(1)),
            settings,
            metrics,
        }
    }

    /// The token source, for renewal and reload housekeeping.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// The deadline of a fetch that starts now.
    pub fn deadline(&self) -> Instant {
        crate::quota::instant_after(
            Instant::now(),
            Duration::from_millis(self.settings.timeout_ms),
        )
    }

    /// Fetches the tenant's score, retrying transient failures until `deadline`.
    pub async fn fetch_score(
        &self,
        tenant: &Arc<Tenant>,
        deadline: Instant,
    ) -> Result<Reading, UpstreamError> {
        let mut retries = 0;
        let mut renewed = false;
        loop {
            match self.attempt(tenant, deadline).await {
                Attempt::Done(reading) => return Ok(reading),
                Attempt::Final(error) => return Err(error),
                Attempt::Unauthorized(detail) if !renewed => {
                    // A 401 may mean the token was revoked or expired early: renew it once.
                    tracing::info!(tenant = %tenant.id, "Defender answered 401; renewing the token once");
                    self.tokens.renew(&tenant.id);
                    renewed = true;
                    tracing::debug!(tenant = %tenant.id, "first 401: {detail}");
                }
                Attempt::Unauthorized(detail) => {
                    return Err(UpstreamError::Denied {
                        status: 401,
                        detail,
                    })
                }
                Attempt::Transient(detail) => {
                    if retries >= self.settings.max_retries {
                        return Err(UpstreamError::Failed { detail });
                    }
                    retries += 1;
                    let pause = self.backoff(retries);
                    if crate::quota::instant_after(Instant::now(), pause) >= deadline {
                        return Err(UpstreamError::Failed { detail });
                    }
                    tracing::debug!(tenant = %tenant.id, retry = retries, pause_ms = pause.as_millis() as u64, "retrying after a transient failure: {detail}");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Full-jitter exponential back-off: a random pause up to `base * 2^(retry-1)`, capped.
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << retry.saturating_sub(1).min(20))
            .min(self.settings.retry_max_ms);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    async fn attempt(&self, tenant: &Arc<Tenant>, deadline: Instant) -> Attempt {
        let token_request = async {
            // The semaphore is never closed, so `acquire` cannot fail; the slot is held only
            // while the token is obtained (usually a cache hit that takes microseconds).
            let _slot = self.token_slots.acquire().await;
            self.tokens.token(tenant).await
        };
        let token = match tokio::time::timeout_at(deadline, token_request).await {
            Err(_) => {
                self.metrics.token_request("timeout");
                return Attempt::Final(UpstreamError::Timeout);
            }
            Ok(Ok(token)) => {
                self.metrics.token_request("ok");
                token
            }
            Ok(Err(TokenError::Rejected { detail, .. })) => {
                self.metrics.token_request("rejected");
                return Attempt::Final(UpstreamError::Credentials { detail });
            }
            Ok(Err(TokenError::Invalid { detail })) => {
                self.metrics.token_request("invalid");
                return Attempt::Final(UpstreamError::Credentials { detail });
            }
            Ok(Err(TokenError::Unavailable { detail })) => {
                self.metrics.token_request("unavailable");
                return Attempt::Transient(format!("Entra ID unavailable: {detail}"));
            }
        };
        // Every HTTP call to Defender spends quota, retries included: this is what Microsoft counts.
        let _permit = match self.quota.admit(tenant, deadline).await {
            Ok(permit) => permit,
            Err(QuotaError::Throttled { retry_after }) => {
                return Attempt::Final(UpstreamError::Throttled { retry_after })
            }
            Err(QuotaError::Deadline) => return Attempt::Final(UpstreamError::Timeout),
        };
        let url = match tenant.api_base.join(CONFIGURATION_SCORE_PATH) {
            Ok(url) => url,
            Err(error) => {
                return Attempt::Final(UpstreamError::Failed {
                    detail: format!("bad API base: {error}"),
                })
            }
        };
        let attempt_deadline = deadline.min(crate::quota::instant_after(
            Instant::now(),
            Duration::from_millis(self.settings.attempt_timeout_ms),
        ));
        let call = async {
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
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(attempt_deadline, call).await;
        let (attempt, call_outcome) = match outcome {
            Err(_) if attempt_deadline >= deadline => {
                (Attempt::Final(UpstreamError::Timeout), CallOutcome::Timeout)
            }
            Err(_) => (
                Attempt::Transient("Defender did not answer in time".to_owned()),
                CallOutcome::Timeout,
            ),
            Ok(Err(error)) => (
                Attempt::Transient(format!(
                    "cannot reach Defender: {}",
                    crate::telemetry::error_chain(&error.without_url())
                )),
                CallOutcome::Transport,
            ),
            Ok(Ok((status, retry_after, body))) => {
                let attempt = self.classify(tenant, status, retry_after, &body);
                let call_outcome = match (&attempt, status.as_u16()) {
                    (Attempt::Done(_), _) => CallOutcome::Ok,
                    (_, 200) => CallOutcome::Malformed,
                    (_, status) => CallOutcome::from_status(status),
                };
                (attempt, call_outcome)
            }
        };
        self.metrics.upstream_call(call_outcome, started.elapsed());
        attempt
    }

    fn classify(
        &self,
        tenant: &Tenant,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Attempt {
        if status == StatusCode::OK {
            return match serde_json::from_slice::<ConfigurationScore>(body) {
                Ok(answer) if answer.score.is_finite() => Attempt::Done(Reading {
                    score: answer.score,
                    time: answer.time,
                    fetched_at: SystemTime::now(),
                }),
                Ok(_) => Attempt::Final(UpstreamError::Failed {
                    detail: "Defender answered a score that is not a finite number".to_owned(),
                }),
                Err(error) => {
                    tracing::warn!(tenant = %tenant.id, "Defender answered 200 with an unusable body: {error}");
                    Attempt::Final(UpstreamError::Failed {
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
        let detail = if code.is_empty() {
            format!("Defender answered {status}")
        } else {
            format!("Defender answered {} {code}: {message}", status.as_u16())
        };
        match status.as_u16() {
            401 => Attempt::Unauthorized(detail),
            403 => Attempt::Final(UpstreamError::Denied {
                status: 403,
                detail,
            }),
            429 => {
                let retry_after = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                self.quota.cool_down(&tenant.id, retry_after);
                Attempt::Final(UpstreamError::Throttled { retry_after })
            }
            500..=599 => Attempt::Transient(detail),
            400 => {
                tracing::error!(tenant = %tenant.id, "Defender rejected our request as malformed: this is a scoregate bug");
                Attempt::Final(UpstreamError::Failed { detail })
            }
            _ => Attempt::Final(UpstreamError::Failed { detail }),
        }
    }
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
