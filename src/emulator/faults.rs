//! Fault profiles: the ways one tenant's "Microsoft" can misbehave, and the deterministic choice
//! of which `flaky` calls fail.
//!
//! Owns the profile names and the flaky decision only; the handlers in [`super::token`],
//! [`super::score`] and [`super::graph`] decide what each profile does to a request.

use super::tenants::mix;
use std::fmt;
use std::str::FromStr;

/// How a tenant misbehaves. Profiles are set per tenant at start or at run time.
///
/// "Score calls" means all the score endpoints (Defender's configuration and exposure scores,
/// Graph's secure scores, and Graph's control profiles) unless a profile names one service:
/// `forbidden`, `unlicensed` and `retired` are Defender's, `graph-forbidden` and
/// `comparisons-outage` are Graph's. Token profiles (`revoked`, `expired-secret`,
/// `not-consented`) hit every audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultProfile {
    /// Score calls take the slow latency (default 2–5 s) on top of the global one.
    Slow,
    /// A share of score calls (default half) fail with 500 `InternalServerError` or 503.
    Flaky,
    /// Every score call is answered 429 `TooManyRequests` with `Retry-After`.
    Throttled,
    /// The token endpoint rejects the client secret (AADSTS7000215) or certificate
    /// (AADSTS700027): the credential was revoked.
    Revoked,
    /// The token endpoint says the client secret expired (AADSTS7000222); certificate tenants
    /// get AADSTS700027 (expired certificate).
    ExpiredSecret,
    /// Defender tokens carry no `Score.Read.All` role; Defender calls get 403 `Forbidden`
    /// (Graph is unaffected).
    Forbidden,
    /// Defender calls get 401 `Unauthorized` "No Tvm license" (Graph is unaffected).
    Unlicensed,
    /// Score calls get 200 with a body that is not valid JSON.
    Malformed,
    /// Score calls are accepted and never answered.
    Hang,
    /// Defender's score endpoints are retired: 410 `Gone` with Defender's error body (after a
    /// valid token, which names the tenant). Graph keeps working.
    Retired,
    /// Graph tokens carry no `SecurityEvents.Read.All` role; Graph calls get 403 `Forbidden`
    /// with Graph's error body (Defender is unaffected).
    GraphForbidden,
    /// Graph's secure score snapshots come back with `averageComparativeScores` of `-1` or
    /// `[]` (depending on the day), as during Microsoft outages; everything else is normal.
    ComparisonsOutage,
    /// The app was never consented to in this tenant (a multi-tenant app without its service
    /// principal there): the token endpoint answers AADSTS700016 "Application … was not found
    /// in the directory", as Entra does for client credentials, for every audience.
    NotConsented,
}

impl FaultProfile {
    /// Every profile, in the order of its numeric code.
    pub const ALL: [FaultProfile; 13] = [
        FaultProfile::Slow,
        FaultProfile::Flaky,
        FaultProfile::Throttled,
        FaultProfile::Revoked,
        FaultProfile::ExpiredSecret,
        FaultProfile::Forbidden,
        FaultProfile::Unlicensed,
        FaultProfile::Malformed,
        FaultProfile::Hang,
        FaultProfile::Retired,
        FaultProfile::GraphForbidden,
        FaultProfile::ComparisonsOutage,
        FaultProfile::NotConsented,
    ];

    /// The kebab-case name used on the command line, in tags and in the operator API.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultProfile::Slow => "slow",
            FaultProfile::Flaky => "flaky",
            FaultProfile::Throttled => "throttled",
            FaultProfile::Revoked => "revoked",
            FaultProfile::ExpiredSecret => "expired-secret",
            FaultProfile::Forbidden => "forbidden",
            FaultProfile::Unlicensed => "unlicensed",
            FaultProfile::Malformed => "malformed",
            FaultProfile::Hang => "hang",
            FaultProfile::Retired => "retired",
            FaultProfile::GraphForbidden => "graph-forbidden",
            FaultProfile::ComparisonsOutage => "comparisons-outage",
            FaultProfile::NotConsented => "not-consented",
        }
    }

    /// Compact encoding for an atomic cell: 0 is "no fault".
    pub(crate) fn encode(profile: Option<FaultProfile>) -> u8 {
        match profile {
            None => 0,
            Some(profile) => {
                let index = Self::ALL.iter().position(|p| *p == profile).unwrap_or(0);
                // ALL has 13 entries, so the index always fits.
                u8::try_from(index + 1).unwrap_or(0)
            }
        }
    }

    /// Inverse of [`FaultProfile::encode`].
    pub(crate) fn decode(code: u8) -> Option<FaultProfile> {
        usize::from(code)
            .checked_sub(1)
            .and_then(|index| Self::ALL.get(index).copied())
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultProfile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|profile| profile.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown fault profile {text:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// What a `flaky` tenant's call number `call` answers: `Some(500)` or `Some(503)` for a
/// failure, `None` for success. Deterministic in (seed, tenant, call), so a test that knows the
/// seed knows the outcome, and the long-run failure share is `share`.
pub(crate) fn flaky_failure(seed: u64, tenant_index: usize, call: u64, share: f64) -> Option<u16> {
    let roll = mix(&[seed, 0xF1A4, tenant_index as u64, call]);
    // The top 53 bits as a uniform number in [0, 1).
    let uniform = (roll >> 11) as f64 / (1u64 << 53) as f64;
    if uniform < share {
        Some(if roll & 1 == 0 { 500 } else { 503 })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_through_names_and_codes() {
        for profile in FaultProfile::ALL {
            assert_eq!(profile.as_str().parse::<FaultProfile>(), Ok(profile));
            assert_eq!(
                FaultProfile::decode(FaultProfile::encode(Some(profile))),
                Some(profile)
            );
        }
        assert_eq!(FaultProfile::decode(FaultProfile::encode(None)), None);
        assert!("nope".parse::<FaultProfile>().is_err());
    }

    #[test]
    fn flaky_failures_follow_the_share() {
        let failures = (0..10_000)
            .filter(|call| flaky_failure(7, 3, *call, 0.5).is_some())
            .count();
        assert!((4_500..5_500).contains(&failures), "{failures}");
        assert!((0..100).all(|call| flaky_failure(7, 3, call, 0.0).is_none()));
        assert!((0..100).all(|call| flaky_failure(7, 3, call, 1.0).is_some()));
    }
}
