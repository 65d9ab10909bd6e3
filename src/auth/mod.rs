//! Callers: API keys and Entra ID callers, what each may see, and how fast each may ask.
//!
//! Keys are stored only as SHA-256 digests; a presented key is hashed and its digest looked up
//! in a map (see [`KeyRing::authenticate`] for why that leaks nothing a timing attack could use). Each key grants a [`Scope`] of tenants (by id, by tag, or all) and its
//! own request rate, so one greedy caller cannot slow another. This module knows nothing of HTTP:
//! the API's guard turns its answers into 401/404/429.

pub mod entra;
pub mod jwks;

use crate::quota::TokioClock;
use crate::tenants::{Tenant, TenantId};
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of every generated key, so that leaked keys are recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "sg_";

/// Which tenants a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant (`tenants = ["*"]`, or authentication turned off).
    All,
    /// Tenants named by id, and tenants carrying any of the tags.
    Some {
        /// Tenant ids granted.
        tenants: HashSet<TenantId>,
        /// Tags granted.
        tags: HashSet<String>,
    },
}

impl Scope {
    /// Whether the caller may see `tenant`.
    pub fn allows(&self, tenant: &Tenant) -> bool {
        match self {
            Scope::All => true,
            Scope::Some { tenants, tags } => {
                tenants.contains(&tenant.id) || tenant.tags.iter().any(|tag| tags.contains(tag))
            }
        }
    }
}

type KeyLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    // Tokio's clock, as for the outbound quotas: a paused test runtime drives key limits too.
    TokioClock,
    StateInformationMiddleware,
>;

/// One configured API key.
pub struct ApiKey {
    /// The key's name, for logs and metrics (never the key itself).
    pub name: String,
    /// SHA-256 of the key.
    digest: [u8; 32],
    /// What the key may see.
    pub scope: Scope,
    /// May read operator data (`/metrics`), which names every tenant.
    pub operator: bool,
    /// Requests allowed per minute.
    pub requests_per_minute: u32,
    /// This key's own limiter: no key shares another's budget.
    limiter: RequestLimiter,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("operator", &self.operator)
            .field("requests_per_minute", &self.requests_per_minute)
            .finish_non_exhaustive()
    }
}

/// The state of a key's rate limit after a request, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Requests per minute.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the full allowance is back.
    pub reset_seconds: u64,
}

/// Why a key may not make this request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the key's request rate is exceeded; retry after {} s", retry_after.as_secs())]
pub struct RateLimited {
    /// Time until one more request is allowed.
    pub retry_after: Duration,
    /// The key's limit.
    pub limit: u32,
}

impl ApiKey {
    /// A key from its (hex) digest; `None` when the digest is not 64 hex characters.
    pub fn new(
        name: String,
        sha256_hex: &str,
        scope: Scope,
        operator: bool,
        requests_per_minute: u32,
    ) -> Option<Self> {
        let digest = parse_digest(sha256_hex)?;
        Some(Self {
            name,
            digest,
            scope,
            operator,
            requests_per_minute,
            limiter: RequestLimiter::new(requests_per_minute)?,
        })
    }

    /// Spends one request of the key's allowance.
    pub fn charge(&self) -> Result<RateState, RateLimited> {
        self.limiter.charge()
    }
}

/// One caller's own requests-per-minute budget (an API key's or a mapped Entra caller's).
pub struct RequestLimiter {
    /// Requests allowed per minute.
    per_minute: u32,
    limiter: KeyLimiter,
}

impl RequestLimiter {
    /// A full budget of `per_minute` requests; `None` for zero.
    pub fn new(per_minute: u32) -> Option<Self> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute)?);
        Some(Self {
            per_minute,
            limiter: RateLimiter::direct_with_clock(quota, TokioClock::default())
                .with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Spends one request of the allowance.
    pub fn charge(&self) -> Result<RateState, RateLimited> {
        let limit = self.per_minute;
        let per_request = 60.0 / f64::from(limit);
        match self.limiter.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let reset = (f64::from(limit - remaining.min(limit)) * per_request).ceil() as u64;
                Ok(RateState {
                    limit,
                    remaining,
                    reset_seconds: reset,
                })
            }
            Err(not_until) => Err(RateLimited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
                limit,
            }),
        }
    }
}

/// Every configured key.
#[derive(Default)]
pub struct KeyRing {
    /// By digest: the configuration refuses two keys with one digest.
    keys: HashMap<[u8; 32], Arc<ApiKey>>,
}

impl fmt::Debug for KeyRing {
    // The map's keys are the digests: Debug shows the keys' names and scopes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.values().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// A ring of keys (of two with the same digest, which the configuration refuses, the last).
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|key| (key.digest, Arc::new(key)))
                .collect(),
        }
    }

    /// The key whose digest matches `presented`: one hash-map lookup by the presented key's
    /// SHA-256, whatever the number of keys (it used to compare with every digest).
    ///
    /// Not a timing oracle: what the lookup's time can depend on is the presented key's
    /// *digest* (its SipHash bucket, randomly keyed per process, and the digest bytes compared
    /// in the bucket), never the key's own bytes. Learning how close a digest came to a stored
    /// one does not help an attacker build a key: moving a digest one byte closer needs a
    /// SHA-256 preimage. The match found is still confirmed in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let digest = sha256(presented.as_bytes());
        let key = self.keys.get(&digest)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(&key.digest, &digest)
            .is_ok()
            .then(|| key.clone())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A new random key (256 bits, base64url, with the `sg_` prefix) and its SHA-256 digest (hex).
pub fn generate_key() -> Result<(String, String), aws_lc_rs::error::Unspecified> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = digest_hex(&key);
    Ok((key, digest))
}

/// The SHA-256 digest of a key, as the configuration stores it (64 lower-case hex digits).
pub fn digest_hex(key: &str) -> String {
    hex::encode(sha256(key.as_bytes()))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The digests of `config/scoregate.example.toml`: pasted unchanged, they would be keys
/// nobody holds (or anybody who read the example could guess one day).
const EXAMPLE_DIGESTS: [&str; 2] = [
    "4f8cd4e2a1d9c2a2a0f0f2c5c0b7a9e1d3c6b8a7f5e4d3c2b1a0f9e8d7c6b5a4",
    "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
];

/// Why `digest` (64 hex digits) is a placeholder rather than a real key's SHA-256, if it is: an
/// example file's digest, or one with a pattern no hash shows (one repeated digit or a few
/// digits only, a repeated half, an ascending or descending run). A real digest has about 16
/// distinct digits; fewer than 8 happens with probability below 10^-19.
pub fn placeholder_digest(digest: &str) -> Option<&'static str> {
    let digest = digest.to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if EXAMPLE_DIGESTS.contains(&digest.as_str()) {
        return Some("is the example configuration's placeholder digest, not a key's");
    }
    let distinct: HashSet<u8> = digest.bytes().collect();
    let (first, second) = digest.split_at(32);
    // Eight or more consecutive digits each one above (or below) the previous: 0123456789abcdef.
    let run = |step: i16| {
        digest.as_bytes().windows(8).any(|window| {
            window
                .windows(2)
                .all(|pair| hex_value(pair[1]) - hex_value(pair[0]) == step)
        })
    };
    if distinct.len() < 8 || first == second || run(1) || run(-1) {
        return Some("looks like a placeholder (a pattern, not the SHA-256 of a generated key)");
    }
    None
}

fn hex_value(digit: u8) -> i16 {
    i16::from(match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit.to_ascii_lowercase() - b'a' + 10,
    })
}

/// The 32 bytes of a digest written as exactly 64 hex digits, in either case.
fn parse_digest(digits: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    // `decode_to_slice` refuses any length but 64 and any character but a hex digit.
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_random_and_verify_against_their_digest() {
        let (key, digest) = generate_key().unwrap();
        let (other, _) = generate_key().unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        assert_eq!(key.len(), KEY_PREFIX.len() + 43, "256 bits of base64url");
        assert_ne!(key, other);
        let ring = KeyRing::new(vec![ApiKey::new(
            "portal".into(),
            &digest,
            Scope::All,
            false,
            60,
        )
        .unwrap()]);
        assert_eq!(ring.authenticate(&key).unwrap().name, "portal");
        assert!(ring.authenticate(&other).is_none());
        assert!(ring.authenticate("").is_none());
        assert!(
            !format!("{ring:?}").contains(&digest),
            "Debug shows no digest"
        );
    }

    #[test]
    fn each_of_many_keys_is_found_by_its_own_digest_and_debug_shows_no_digest() {
        let keys: Vec<(String, String)> = (0..50).map(|_| generate_key().unwrap()).collect();
        let ring = KeyRing::new(
            keys.iter()
                .enumerate()
                .map(|(index, (_, digest))| {
                    ApiKey::new(format!("key{index}"), digest, Scope::All, false, 60).unwrap()
                })
                .collect(),
        );
        assert_eq!(ring.len(), 50);
        for (index, (key, _)) in keys.iter().enumerate() {
            assert_eq!(ring.authenticate(key).unwrap().name, format!("key{index}"));
        }
        let (stranger, _) = generate_key().unwrap();
        assert!(ring.authenticate(&stranger).is_none());
        // A digest itself is not a key: presenting it is hashed again and finds nothing.
        assert!(ring.authenticate(&keys[0].1).is_none());
        let debug = format!("{ring:?}");
        assert!(debug.contains("key7"));
        let first = sha256(keys[0].0.as_bytes());
        assert!(
            !debug.contains(
                &format!("{:?}", &first[..4])
                    .trim_end_matches(']')
                    .to_owned()
            ),
            "Debug shows no digest bytes"
        );
        assert!(!keys
            .iter()
            .any(|(_, digest)| debug.contains(digest.as_str())));
    }

    #[test]
    fn placeholder_digests_are_told_from_real_ones() {
        for placeholder in EXAMPLE_DIGESTS
            .iter()
            .map(|d| (*d).to_owned())
            .chain([
                "0".repeat(64),
                "a".repeat(64),
                "ab".repeat(32),
                "0123456789abcdef".repeat(4),
            ])
            .chain([
                "fedcba9876543210".repeat(4),
                format!("{}{}", "1f".repeat(28), "01234567"),
            ])
        {
            assert!(placeholder_digest(&placeholder).is_some(), "{placeholder}");
        }
        for _ in 0..1_000 {
            let (_, digest) = generate_key().unwrap();
            assert_eq!(placeholder_digest(&digest), None, "{digest}");
        }
        assert_eq!(placeholder_digest(&digest_hex("k")), None);
    }

    #[test]
    fn digests_must_be_64_hex_digits() {
        assert!(parse_digest(&"ab".repeat(32)).is_some());
        assert!(parse_digest(&"AB".repeat(32)).is_some());
        assert!(parse_digest("abc").is_none());
        assert!(parse_digest(&"zz".repeat(32)).is_none());
        assert!(parse_digest(&"é".repeat(32)).is_none());
        assert!(parse_digest(&"ab".repeat(31)).is_none());
        assert!(parse_digest(&"ab".repeat(33)).is_none());
        // `u8::from_str_radix` takes a leading `+`; a digest is digits only.
        assert!(parse_digest(&"+a".repeat(32)).is_none());
    }

    #[test]
    fn a_key_is_limited_to_its_own_rate_and_reports_what_is_left() {
        let digest = digest_hex("k");
        assert_eq!(
            digest,
            "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"
        );
        let key = ApiKey::new("k".into(), &digest, Scope::All, false, 3).unwrap();
        let first = key.charge().unwrap();
        assert_eq!((first.limit, first.remaining), (3, 2));
        assert_eq!(first.reset_seconds, 20);
        key.charge().unwrap();
        assert_eq!(key.charge().unwrap().remaining, 0);
        let refused = key.charge().unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(15), "{refused:?}");
        let other = ApiKey::new("o".into(), &digest, Scope::All, false, 3).unwrap();
        assert!(other.charge().is_ok(), "another key has its own budget");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_key_is_allowed_again_once_tokio_time_has_passed_its_retry_after() {
        let key = ApiKey::new("k".into(), &digest_hex("k"), Scope::All, false, 3).unwrap();
        for _ in 0..3 {
            key.charge().unwrap();
        }
        let refused = key.charge().unwrap_err();
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(20),
            "one request per 20 s"
        );

        tokio::time::advance(Duration::from_secs(19)).await;
        let still = key.charge().unwrap_err();
        assert_eq!(still.retry_after, Duration::from_secs(1));

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            key.charge().unwrap().remaining,
            0,
            "one request came back, and is spent"
        );
    }
}
