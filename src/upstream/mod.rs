//! The upstream sources: the one shared HTTPS client, and behind [`ScoreSource`] the one call that
//! reads one of a tenant's scores with a bearer token. Each metric's source is a file of
//! [`sources`] (Defender's `GET /api/configurationScore` for `device` and `GET /api/exposureScore`
//! for `exposure`, Microsoft Graph's `GET /v1.0/security/secureScores?$top=1` for `secure`), with
//! what each service's answers share beside them.
//!
//! This is the narrow interface to Microsoft (the Defender API retires on 2027-02-01; Graph's
//! secure score outlives it, see `docs/api/after-2027-02-01.md`): a source turns one HTTP
//! exchange into a [`Reading`] or a [`CallFailure`] that states the facts (status,
//! `Retry-After`, a secret-free detail), and names its metric, its token scope and the upstream
//! service whose quota it spends. It decides nothing: no retries, deadlines, quotas, tokens or
//! cool-downs — the policy stack ([`crate::policy`]) owns those, in one place.
//! Correlation ids (`target`) are logged; tokens and secrets never are.

// The score body lives in the vocabulary (one definition for the API, Redis and the history);
// a source's answer is one [`Reading`].
use crate::controls::graph::{ControlProfilesPage, SnapshotControls};
pub use crate::model::{
    Categories, Comparison, Metric, Reading, ScoreKey, SecureDetails, UpstreamService,
};
use crate::tenants::Tenant;
use crate::token::BearerToken;
pub use settings::UpstreamSettings;
pub use sources::secure::MAX_COMPARISONS;
use std::time::{Duration, SystemTime};

/// Longest cool-down a source's `Retry-After` may impose: anything longer (or unreadable as a
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

/// Why a fetch failed, in the gateway's terms (the table of `docs/api/errors.md`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Entra refused the credentials (AADSTS codes): not retried.
    #[error("Entra ID refused the credentials: {detail}")]
    Credentials {
        /// Secret-free detail, with the AADSTS code.
        detail: String,
    },
    /// The source answered 401 (after one renewal) or 403: consent, role or licence.
    #[error("{detail}")]
    Denied {
        /// 401 or 403.
        status: u16,
        /// The source's code and message.
        detail: String,
    },
    /// The source answered 429, or the tenant's quota or cool-down for it forbids calling now.
    #[error("{} is throttling this tenant; retry after {} s", service.display_name(), retry_after.as_secs())]
    Throttled {
        /// The service whose limits apply.
        service: UpstreamService,
        /// How long until a call may be made.
        retry_after: Duration,
    },
    /// The source failed (5xx), answered something unusable, or could not be reached, after
    /// retries.
    #[error("{detail}")]
    Failed {
        /// The service that failed.
        service: UpstreamService,
        /// What went wrong, secret-free.
        detail: String,
    },
    /// No answer within the deadline.
    #[error("no answer from {} within the deadline", service.display_name())]
    Timeout {
        /// The service that was asked.
        service: UpstreamService,
    },
    /// The score endpoint answered 404 or 410: the API is retired, or not offered in the
    /// tenant's cloud. Not retried; the tenant is asked again at most once an hour.
    #[error("{detail}")]
    Gone {
        /// What the source answered, and which metrics the tenant has besides.
        detail: String,
    },
}

impl UpstreamError {
    /// The gateway's stable error code for this failure (`docs/api/errors.md`); also the
    /// `outcome` label of `scoregate_fetches_total`.
    pub fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            Self::Credentials { .. } | Self::Denied { .. } => Code::UpstreamAuth,
            Self::Failed { .. } => Code::UpstreamError,
            Self::Throttled { .. } => Code::UpstreamThrottled,
            Self::Timeout { .. } => Code::UpstreamTimeout,
            Self::Gone { .. } => Code::UpstreamGone,
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
    client_builder(settings, extra_ca_pem)?.build()
}

/// Builds the HTTPS client webhooks are delivered with: [`http_client`]'s TLS roots, user agent
/// and timeouts, but **no redirects followed**. A signed delivery goes to the URL the operator
/// configured and nowhere else: a receiver (or whoever took its host over) that answers 3xx
/// cannot send it on to another host, an internal address included. A 3xx is an answer like
/// any other non-2xx: the delivery failed, not retried (`alerts::delivery`).
///
/// A builder: the alerts add the resolver that keeps each delivery within its reach
/// (`alerts::WebhookClients`).
pub fn webhook_client(
    settings: &UpstreamSettings,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::ClientBuilder, reqwest::Error> {
    Ok(client_builder(settings, extra_ca_pem)?.redirect(reqwest::redirect::Policy::none()))
}

fn client_builder(
    settings: &UpstreamSettings,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::ClientBuilder, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("scoregate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(settings.max_in_flight.max(1));
    if let Some(pem) = extra_ca_pem {
        builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
    }
    Ok(builder)
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

/// Which page of a source's daily history one call asks for: `days` snapshots after the
/// newest `skip` (Graph: `$top` and `$skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyPage {
    /// How many days the page holds at most.
    pub days: u32,
    /// How many of the newest days come before it.
    pub skip: u32,
}

/// One page of a source's daily history.
#[derive(Debug, Clone, Default)]
pub struct DailyReadings {
    /// The usable snapshots' readings, newest first.
    pub readings: Vec<Reading>,
    /// How many snapshots the page held, usable or not: a page holding fewer than it asked for
    /// is the last.
    pub snapshots: usize,
}

/// One upstream call that reads a tenant's score: the seam where more sources plug in.
#[async_trait::async_trait]
pub trait ScoreSource: Send + Sync {
    /// The metric this source reads.
    fn metric(&self) -> Metric;
    /// The service whose per-tenant quota a call spends.
    fn service(&self) -> UpstreamService;
    /// The OAuth scope of the bearer token a call needs for `tenant`: its endpoint's for the
    /// source's service. Configuration gives every metric of a tenant its service's endpoint;
    /// without one the scope is empty and Entra refuses the token.
    fn scope(&self, tenant: &Tenant) -> std::sync::Arc<str> {
        tenant.endpoint(self.service()).map_or_else(
            || std::sync::Arc::from(""),
            |endpoint| endpoint.scope.clone(),
        )
    }
    /// Makes one call for `tenant` with `token`. No retries and no deadline: the caller bounds it.
    async fn call(&self, tenant: &Tenant, token: &BearerToken) -> Result<Reading, CallFailure>;
    /// Makes one call for one page of the source's own daily history, newest first (Graph
    /// keeps 90 days of the secure score; the history back-fills from it, page after page).
    /// Same rules as [`ScoreSource::call`]. A source that keeps no history answers `Unusable`.
    async fn daily(
        &self,
        _tenant: &Tenant,
        _token: &BearerToken,
        _page: DailyPage,
    ) -> Result<DailyReadings, CallFailure> {
        Err(CallFailure::Unusable {
            detail: format!("the {} source keeps no daily history", self.metric()),
        })
    }
    /// Makes one call for one page of the tenant's Secure Score control profiles: the first
    /// page when `next` is none, else `next` (the previous page's `@odata.nextLink`, followed
    /// as it is; one naming another host than the tenant's base URL is refused). Same rules as
    /// [`ScoreSource::call`]. A source whose answers carry no controls answers `Unusable`.
    async fn control_profiles(
        &self,
        _tenant: &Tenant,
        _token: &BearerToken,
        _next: Option<&str>,
    ) -> Result<ControlProfilesPage, CallFailure> {
        Err(CallFailure::Unusable {
            detail: format!("the {} source has no control profiles", self.metric()),
        })
    }
}

/// Told of the controls in the answers a source reads: the newest snapshot's on every
/// successful call, every snapshot's on a daily-history call. Lower layers emit, the root
/// subscribes: the composition root wires the tenants' controls in (`tenant_controls`). Called
/// on the call's task: an implementation must not block.
pub trait ControlsSink: Send + Sync {
    /// The controls of the snapshot `reading` was read from (descriptions dropped: no route
    /// serves them, and they are most of a snapshot's bytes).
    fn on_snapshot(&self, tenant: &Tenant, reading: &Reading, controls: SnapshotControls);
    /// The controls of every snapshot of a daily-history answer, newest first.
    fn on_daily(&self, _tenant: &Tenant, _snapshots: Vec<SnapshotControls>) {}
}

/// The shared HTTPS client and the largest answer a source reads from it.
#[derive(Clone)]
pub struct Transport {
    /// The shared HTTPS client (also every credential's transport).
    pub http: reqwest::Client,
    /// Largest answer body read, in bytes (`[upstream] max_body_bytes`): a larger one is dropped
    /// as it arrives, so a broken or hostile upstream cannot make the gateway hold it.
    pub max_body_bytes: usize,
}

#[cfg(test)]
mod tests;

mod settings;
pub mod sources;
