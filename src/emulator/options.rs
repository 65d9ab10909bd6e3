//! What the emulator serves and how it misbehaves: [`EmulatorOptions`] and the small value types
//! its fields use ([`Selector`], [`FaultAssignment`], [`CredentialAssignment`], [`LatencyRange`]).
//!
//! Owns parsing (`FromStr`, shared by the CLI and tests) and validation of options. It does not
//! decide which tenant gets what: that is the emulator's `tenants` module's job.

use super::faults::FaultProfile;
use super::EmulatorError;
use rand::Rng;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Default number of tenants.
pub const DEFAULT_TENANTS: usize = 25;
/// Default seed: runs are reproducible unless asked otherwise.
pub const DEFAULT_SEED: u64 = 7;
/// Defender's documented limit per application and tenant, per minute.
pub const DEFAULT_QUOTA_PER_MINUTE: u32 = 100;
/// Defender's documented limit per application and tenant, per hour.
pub const DEFAULT_QUOTA_PER_HOUR: u32 = 1_500;
/// Graph's documented limit per application and tenant, per minute.
pub const DEFAULT_GRAPH_QUOTA_PER_MINUTE: u32 = 150;
/// Graph's documented limit per application and tenant, per ten minutes.
pub const DEFAULT_GRAPH_QUOTA_PER_TEN_MINUTES: u32 = 10_000;
/// Graph's documented cap on concurrent requests per application and tenant.
pub const DEFAULT_GRAPH_MAX_CONCURRENT: u32 = 4;
/// Entra's usual access-token lifetime (`expires_in`).
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3_599;
/// `Retry-After` of the `throttled` fault profile.
pub const DEFAULT_THROTTLED_RETRY_AFTER_SECONDS: u64 = 30;
/// Share of `flaky` calls that fail.
pub const DEFAULT_FLAKY_ERROR_SHARE: f64 = 0.5;
/// Latency of the `slow` fault profile.
pub const DEFAULT_SLOW_LATENCY: LatencyRange = LatencyRange {
    min_ms: 2_000,
    max_ms: 5_000,
};
/// Upper bound of `tenants`: far beyond any MSP, low enough to keep start-up instant.
pub const MAX_TENANTS: usize = 100_000;

/// Everything `Emulator::start` needs. `Default` is a healthy 25-tenant emulator on a free
/// loopback port with Defender's and Graph's documented quotas.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Address to listen on; port 0 picks a free port (`Emulator::addr` reports the real one).
    pub bind: SocketAddr,
    /// Number of tenants to generate.
    pub tenants: usize,
    /// Seed of every generated value: same seed, same tenant ids, client ids, secrets, scores and
    /// fault selection. (Certificate keys are the exception: they are fresh RSA keys every run.)
    pub seed: u64,
    /// Fault profiles and the tenants they apply to, applied in order; a tenant gets at most one.
    pub faults: Vec<FaultAssignment>,
    /// Credential kinds and the tenants they apply to; tenants not selected have their own app
    /// registration with a client secret.
    pub credentials: Vec<CredentialAssignment>,
    /// Latency added to every score call (all tenants), if any.
    pub latency: Option<LatencyRange>,
    /// Latency of the `slow` profile (on top of `latency`).
    pub slow_latency: LatencyRange,
    /// Share (0..=1) of a `flaky` tenant's calls that fail with 500 or 503; which calls fail is
    /// deterministic from the seed and the call number.
    pub flaky_error_share: f64,
    /// `Retry-After` (seconds) of the `throttled` profile's 429 answers.
    pub throttled_retry_after_seconds: u64,
    /// Calls per (application, tenant) per sliding minute; `None` means unlimited.
    pub quota_per_minute: Option<u32>,
    /// Calls per (application, tenant) per sliding hour; `None` means unlimited.
    pub quota_per_hour: Option<u32>,
    /// Graph calls per (application, tenant) per sliding minute; `None` means unlimited.
    pub graph_quota_per_minute: Option<u32>,
    /// Graph calls per (application, tenant) per sliding ten minutes; `None` means unlimited.
    pub graph_quota_per_ten_minutes: Option<u32>,
    /// Graph calls in flight at once per (application, tenant); beyond it Graph answers 429.
    /// `None` means unlimited.
    pub graph_max_concurrent: Option<u32>,
    /// Lifetime of issued access tokens (`expires_in`).
    pub token_lifetime_seconds: u64,
    /// actix worker threads (each serves TLS connections on its own thread).
    pub workers: usize,
    /// The day the generated score values start from; `None`: today. Only the values are
    /// pinned (each emulated day after the start still drifts them): every timestamp, token
    /// expiry and quota window stays on the real clock. Tests pin it so that their expected
    /// values are the same on any day.
    pub score_date: Option<time::Date>,
    /// Caller apps of the MSP tenant beside the default ones (`portal`, `ops`, `norole`,
    /// `tagged`); one of a default name replaces its roles.
    pub callers: Vec<super::callers::CallerSpec>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tenants: DEFAULT_TENANTS,
            seed: DEFAULT_SEED,
            faults: Vec::new(),
            credentials: Vec::new(),
            latency: None,
            slow_latency: DEFAULT_SLOW_LATENCY,
            flaky_error_share: DEFAULT_FLAKY_ERROR_SHARE,
            throttled_retry_after_seconds: DEFAULT_THROTTLED_RETRY_AFTER_SECONDS,
            quota_per_minute: Some(DEFAULT_QUOTA_PER_MINUTE),
            quota_per_hour: Some(DEFAULT_QUOTA_PER_HOUR),
            graph_quota_per_minute: Some(DEFAULT_GRAPH_QUOTA_PER_MINUTE),
            graph_quota_per_ten_minutes: Some(DEFAULT_GRAPH_QUOTA_PER_TEN_MINUTES),
            graph_max_concurrent: Some(DEFAULT_GRAPH_MAX_CONCURRENT),
            token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECONDS,
            workers: 2,
            score_date: None,
            callers: Vec::new(),
        }
    }
}

impl EmulatorOptions {
    /// Checks ranges that types cannot express; the error names the option.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let invalid = |option: &'static str, reason: String| {
            Err(EmulatorError::InvalidOption { option, reason })
        };
        if self.tenants == 0 || self.tenants > MAX_TENANTS {
            return invalid("tenants", format!("must be between 1 and {MAX_TENANTS}"));
        }
        if !(0.0..=1.0).contains(&self.flaky_error_share) {
            return invalid("flaky-error-share", "must be between 0 and 1".into());
        }
        if self.workers == 0 || self.workers > 256 {
            return invalid("workers", "must be between 1 and 256".into());
        }
        if self.token_lifetime_seconds == 0 || self.token_lifetime_seconds > 86_400 {
            return invalid(
                "token-lifetime-seconds",
                "must be between 1 and 86400".into(),
            );
        }
        if self.quota_per_minute == Some(0) || self.quota_per_hour == Some(0) {
            return invalid(
                "quota",
                "a limit must be at least 1 (omit it for none)".into(),
            );
        }
        if self.graph_quota_per_minute == Some(0)
            || self.graph_quota_per_ten_minutes == Some(0)
            || self.graph_max_concurrent == Some(0)
        {
            return invalid(
                "graph-quota",
                "a Graph limit must be at least 1 (omit it for none)".into(),
            );
        }
        for assignment in &self.faults {
            assignment.selector.validate("fault")?;
        }
        for assignment in &self.credentials {
            assignment.selector.validate("credential")?;
        }
        Ok(())
    }
}

/// Which tenants an assignment applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// A share of the tenants (0..=1), picked deterministically from the seed among those not
    /// already assigned; the count is rounded to the nearest integer.
    Fraction(f64),
    /// Tenants named by slug (`contoso`) or tenant id (GUID).
    Tenants(Vec<String>),
}

impl Selector {
    fn validate(&self, option: &'static str) -> Result<(), EmulatorError> {
        match self {
            Selector::Fraction(share) if !(0.0..=1.0).contains(share) => {
                Err(EmulatorError::InvalidOption {
                    option,
                    reason: format!("fraction {share} is not between 0 and 1"),
                })
            }
            Selector::Tenants(names) if names.is_empty() => Err(EmulatorError::InvalidOption {
                option,
                reason: "names no tenant".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl FromStr for Selector {
    type Err = String;

    /// `0.1` (a fraction), `all`, or a comma-separated list of slugs or tenant ids.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(Selector::Fraction(1.0));
        }
        if let Ok(share) = text.parse::<f64>() {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("fraction {text} is not between 0 and 1"));
            }
            return Ok(Selector::Fraction(share));
        }
        let names: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            return Err("expected a fraction (0.1) or tenant names (contoso,fabrikam)".into());
        }
        Ok(Selector::Tenants(names))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Fraction(share) => write!(f, "{share}"),
            Selector::Tenants(names) => f.write_str(&names.join(",")),
        }
    }
}

/// How tenants authenticate to the emulated Entra ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// The tenant has its own app registration with a client secret (the default).
    Secret,
    /// The tenant has its own app registration with an RSA certificate credential.
    Certificate,
    /// The tenant consented the MSP's one multi-tenant app: one client id and one secret shared
    /// by every such tenant.
    Shared,
}

impl CredentialKind {
    /// The name used on the command line and in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Secret => "secret",
            CredentialKind::Certificate => "certificate",
            CredentialKind::Shared => "shared",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "secret" => Ok(CredentialKind::Secret),
            "certificate" | "cert" => Ok(CredentialKind::Certificate),
            "shared" => Ok(CredentialKind::Shared),
            other => Err(format!(
                "unknown credential kind {other:?} (expected secret, certificate or shared)"
            )),
        }
    }
}

/// A fault profile and the tenants it applies to (`slow=0.1`, `revoked=contoso,fabrikam`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultAssignment {
    /// The profile.
    pub profile: FaultProfile,
    /// Its tenants.
    pub selector: Selector,
}

impl FromStr for FaultAssignment {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (profile, selector) = text
            .split_once('=')
            .ok_or_else(|| format!("expected PROFILE=SELECTOR (slow=0.1), got {text:?}"))?;
        Ok(Self {
            profile: profile.parse()?,
            selector: selector.parse()?,
        })
    }
}

/// A credential kind and the tenants it applies to (`certificate=0.2`, `shared=contoso`).
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialAssignment {
    /// The kind.
    pub kind: CredentialKind,
    /// Its tenants.
    pub selector: Selector,
}

impl FromStr for CredentialAssignment {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, selector) = text
            .split_once('=')
            .ok_or_else(|| format!("expected KIND=SELECTOR (certificate=0.2), got {text:?}"))?;
        Ok(Self {
            kind: kind.parse()?,
            selector: selector.parse()?,
        })
    }
}

/// A uniform latency distribution in milliseconds, `50..150` (or one fixed value, `100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyRange {
    /// Shortest delay.
    pub min_ms: u64,
    /// Longest delay (inclusive).
    pub max_ms: u64,
}

impl LatencyRange {
    /// A delay drawn uniformly from the range.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let ms = if self.max_ms > self.min_ms {
            rng.random_range(self.min_ms..=self.max_ms)
        } else {
            self.min_ms
        };
        Duration::from_millis(ms)
    }
}

impl FromStr for LatencyRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected milliseconds like 50..150, got {text:?}"))
        };
        let (min_ms, max_ms) = match text.split_once("..") {
            Some((min, max)) => (parse(min)?, parse(max.trim_start_matches('='))?),
            None => {
                let fixed = parse(text)?;
                (fixed, fixed)
            }
        };
        if min_ms > max_ms {
            return Err(format!(
                "{min_ms}..{max_ms}: the minimum exceeds the maximum"
            ));
        }
        if max_ms > 3_600_000 {
            return Err("latency above one hour".into());
        }
        Ok(Self { min_ms, max_ms })
    }
}

impl fmt::Display for LatencyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.min_ms, self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_fractions_and_names() {
        assert_eq!("0.1".parse::<Selector>(), Ok(Selector::Fraction(0.1)));
        assert_eq!("all".parse::<Selector>(), Ok(Selector::Fraction(1.0)));
        assert_eq!(
            "contoso, fabrikam".parse::<Selector>(),
            Ok(Selector::Tenants(vec!["contoso".into(), "fabrikam".into()]))
        );
        assert!("1.5".parse::<Selector>().is_err());
        assert!(",".parse::<Selector>().is_err());
    }

    #[test]
    fn assignments_parse_profile_and_selector() {
        let fault: FaultAssignment = "expired-secret=contoso".parse().unwrap();
        assert_eq!(fault.profile, FaultProfile::ExpiredSecret);
        let credential: CredentialAssignment = "certificate=0.2".parse().unwrap();
        assert_eq!(credential.kind, CredentialKind::Certificate);
        assert!("bogus=0.1".parse::<FaultAssignment>().is_err());
        assert!("slow".parse::<FaultAssignment>().is_err());
    }

    #[test]
    fn latency_ranges_parse() {
        let range: LatencyRange = "50..150".parse().unwrap();
        assert_eq!((range.min_ms, range.max_ms), (50, 150));
        let fixed: LatencyRange = "7".parse().unwrap();
        assert_eq!((fixed.min_ms, fixed.max_ms), (7, 7));
        assert!("150..50".parse::<LatencyRange>().is_err());
        assert!("fast".parse::<LatencyRange>().is_err());
    }

    #[test]
    fn defaults_are_valid() {
        assert!(EmulatorOptions::default().validate().is_ok());
    }
}
