//! The closed sets a component records with: how a call, a cache look-up, a quota check, a
//! fetch or a reload ended, and the label sets built from them. Nothing here is registered: the
//! registry in [`super::Metrics`] turns these into series.

use crate::code::Code;
use prometheus_client::encoding::EncodeLabelSet;

/// How a configuration reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration validated and was applied.
    Ok,
    /// The new configuration was refused; the old one keeps serving.
    Invalid,
}

impl ReloadOutcome {
    pub(super) const ALL: [Self; 2] = [Self::Ok, Self::Invalid];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
        }
    }
}

/// A bounded outcome code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: &'static str,
}

/// An upstream service (its fixed name, [`UpstreamService::as_str`]) and a bounded outcome code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub(super) service: &'static str,
    pub(super) outcome: &'static str,
}

/// An upstream service, by its fixed name ([`UpstreamService::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ServiceLabels {
    pub(super) service: &'static str,
}

/// What one HTTP call to a source (Defender or Microsoft Graph) ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// 200 with a usable score.
    Ok,
    /// 200 with a body that is not a score.
    Malformed,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 429.
    Throttled,
    /// 5xx.
    ServerError,
    /// 404 or 410: the endpoint is gone (retired, or not offered in the tenant's cloud).
    Gone,
    /// Any other status.
    OtherStatus,
    /// No answer: connection, TLS or protocol failure.
    Transport,
    /// No answer within the attempt's deadline.
    Timeout,
}

impl CallOutcome {
    pub(super) const ALL: [Self; 10] = [
        Self::Ok,
        Self::Malformed,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Throttled,
        Self::ServerError,
        Self::Gone,
        Self::OtherStatus,
        Self::Transport,
        Self::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Malformed => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::Gone => "gone",
            Self::OtherStatus => "other_status",
            Self::Transport => "transport",
            Self::Timeout => "timeout",
        }
    }

    /// The outcome of an answer with this HTTP status (`malformed` is decided by the caller).
    pub fn from_status(status: u16) -> Self {
        match status {
            200 => Self::Ok,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            429 => Self::Throttled,
            404 | 410 => Self::Gone,
            500..=599 => Self::ServerError,
            _ => Self::OtherStatus,
        }
    }
}

/// What a score cache look-up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh entry was served.
    Hit,
    /// Nothing servable was cached: the caller waited for a fetch.
    Miss,
    /// A stale entry was served (while revalidating, or covering a failure).
    Stale,
}

impl CacheResult {
    pub(super) const ALL: [Self; 3] = [Self::Hit, Self::Miss, Self::Stale];

    /// Its place in [`Self::ALL`].
    pub(super) fn index(self) -> usize {
        match self {
            Self::Hit => 0,
            Self::Miss => 1,
            Self::Stale => 2,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

/// Why the quota refused an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The tenant is in a cool-down its source imposed (429 `Retry-After`).
    CoolDown,
    /// The tenant's per-minute or per-hour limit would only allow a call after the deadline.
    Rate,
    /// No in-flight slot freed up before the deadline.
    InFlight,
    /// The upstream service's cap on one tenant's calls at once (Graph's 4) stayed full until
    /// the deadline.
    TenantInFlight,
}

impl QuotaRefusal {
    pub(super) const ALL: [Self; 4] = [
        Self::CoolDown,
        Self::Rate,
        Self::InFlight,
        Self::TenantInFlight,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::CoolDown => "cool_down",
            Self::Rate => "rate",
            Self::InFlight => "in_flight",
            Self::TenantInFlight => "tenant_in_flight",
        }
    }
}

/// The `outcome` of a fetch that succeeded; a failed one is its [`Code`].
pub const FETCH_OK: &str = "ok";

/// The codes a score fetch can end with besides [`FETCH_OK`]: an upstream failure's, or the fetch
/// task's own end (panic: `internal`; cancelled by shutdown: `shutting_down`).
pub const FETCH_FAILURES: [Code; 7] = [
    Code::UpstreamAuth,
    Code::UpstreamError,
    Code::UpstreamThrottled,
    Code::UpstreamTimeout,
    Code::UpstreamGone,
    Code::Internal,
    Code::ShuttingDown,
];
