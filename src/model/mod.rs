//! The vocabulary every layer speaks: which tenant ([`TenantId`]), which number ([`Metric`]),
//! which upstream service ([`UpstreamService`]), the key of one number of one tenant
//! ([`ScoreKey`]), and the body of a score ([`Reading`], with [`SecureDetails`]).
//!
//! The bottom of the crate: this module imports nothing of it, so that every other module may
//! import it without a cycle. It owns names and their parsing; it deliberately holds no
//! behaviour (no I/O, no clock, no settings). The old paths (`tenants::TenantId`,
//! `upstream::Metric`, `upstream::ScoreKey`, `upstream::UpstreamService`, `upstream::Reading`,
//! `upstream::SecureDetails`, `upstream::Categories`, `upstream::Comparison`, `history::Metric`)
//! re-export these.
//!
//! - `score`: the score body ([`Reading`]), defined once for the API, Redis and the history.

mod score;

pub use score::{optional_properties, rfc3339, Categories, Comparison, Reading, SecureDetails};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The gateway's own id of a tenant: URL-safe, used in routes (`/tenants/{id}/score`).
///
/// Shared, not copied: the id keys the cache, the flights, the quotas, the tokens and the
/// metrics of its tenant, and a clone is a reference count, not an allocation per copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a string is not a [`TenantId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a tenant id is 1 to 64 characters of a-z, A-Z, 0-9, '-', '_' or '.', not starting with '.'"
)]
pub struct InvalidTenantId;

impl TenantId {
    /// Longest id accepted: ids appear in URLs, logs and metric labels.
    pub const MAX_LEN: usize = 64;

    /// Checks that `value` is URL-safe (unreserved characters only) and of sane length.
    pub fn parse(value: &str) -> Result<Self, InvalidTenantId> {
        let valid = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && !value.starts_with('.')
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidTenantId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Looked up by its text in maps keyed by the id ([`TenantId`] hashes and compares as its text).
impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which of a tenant's numbers: `device` (Microsoft Secure Score for Devices, Defender, raw
/// points, higher is better), `exposure` (Defender's exposure score, 0–100, **lower is
/// better**) or `secure` (Microsoft Secure Score, Microsoft Graph, points of `max_score`). Each
/// is read from one upstream source; `device` and `exposure` end with the Defender API on
/// 2027-02-01.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Microsoft Secure Score for Devices (Defender `configurationScore`): raw points, no
    /// maximum, higher is better. Retired with the Defender API on 2027-02-01.
    Device,
    /// Defender's exposure score (`exposureScore`): 0–100, **lower is better**. Retired with the
    /// Defender API on 2027-02-01.
    Exposure,
    /// Microsoft Secure Score (Graph `secureScores`): `score` points of `max_score`, higher is
    /// better; also `percentage`, `categories` and `comparisons`.
    Secure,
}

impl Metric {
    /// Every metric, in the order lists show them.
    pub const ALL: [Metric; 3] = [Metric::Device, Metric::Exposure, Metric::Secure];

    /// The metric's name in the API (`metric=device`) and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Exposure => "exposure",
            Self::Secure => "secure",
        }
    }

    /// Every metric's name, separated by `, ` ("device, exposure, secure"), for messages that
    /// list the choices.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// The metric named `name` (exactly as [`Metric::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|metric| metric.as_str() == name)
    }

    /// The upstream service the metric is read from.
    pub fn service(self) -> UpstreamService {
        match self {
            Self::Device | Self::Exposure => UpstreamService::Defender,
            Self::Secure => UpstreamService::Graph,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One number of one tenant: what scores are cached, fetched once at a time and backed off
/// under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScoreKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The metric.
    pub metric: Metric,
}

/// An upstream service whose per-tenant limits several sources may share: Defender's 100/min and
/// 1,500/h cover every Defender score of a tenant; Graph has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpstreamService {
    /// Microsoft Defender for Endpoint's API (`device`, `exposure`).
    Defender,
    /// Microsoft Graph (`secure`).
    Graph,
}

impl UpstreamService {
    /// Every service: the closed set of the `service` label of the upstream call metrics.
    pub const ALL: [UpstreamService; 2] = [UpstreamService::Defender, UpstreamService::Graph];

    /// The service's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Defender => "defender",
            Self::Graph => "graph",
        }
    }

    /// The service's name for people ("Defender answered 410").
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Defender => "Defender",
            Self::Graph => "Microsoft Graph",
        }
    }
}
