//! Entra ID's token signing keys: read from the issuer's OpenID configuration (`jwks_uri`),
//! cached by `kid`, refreshed hourly, refetched on an unknown `kid` at most once per five
//! minutes, and kept in use while the key endpoint is down.
//!
//! Time is tokio's clock, so the refresh and the refetch floor are tested on a paused clock.
//! Where the keys come from is a [`KeySource`]: over HTTPS in the gateway ([`HttpKeySource`]),
//! a counter in the unit tests. It does not check tokens; `entra` does, with the key found here.

use async_trait::async_trait;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Keys older than this are refetched (Microsoft: "refresh hourly").
pub const REFRESH_AFTER: Duration = Duration::from_secs(3_600);
/// An unknown `kid` (or a failed refresh) causes at most one fetch per this long, so that
/// tokens with made-up `kid`s cannot turn the gateway into a load generator.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(300);
/// With no key at all, a failed fetch is retried after this long.
pub const EMPTY_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Longest a key fetch (configuration plus key set) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most keys kept from one key set (Entra publishes a handful).
const MAX_KEYS: usize = 64;

/// One RSA verification key of the key set.
pub struct SigningKey {
    /// The key, for RS256.
    pub decoding: DecodingKey,
    /// The key's own `issuer` (Entra writes `…/{tenantid}/v2.0`), when the key set names one.
    pub issuer: Option<String>,
}

/// One entry of a JSON Web Key Set, as far as RS256 needs it; other members are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyEntry {
    /// Key type: only `RSA` entries are used.
    #[serde(default)]
    pub kty: String,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Intended use: `sig` or absent.
    #[serde(default, rename = "use")]
    pub usage: Option<String>,
    /// Algorithm, when the key names one: only `RS256` (or none) is used.
    #[serde(default)]
    pub alg: Option<String>,
    /// Modulus, base64url.
    #[serde(default)]
    pub n: Option<String>,
    /// Exponent, base64url.
    #[serde(default)]
    pub e: Option<String>,
    /// The issuer the key signs for (Entra's extension).
    #[serde(default)]
    pub issuer: Option<String>,
}

/// Why no key set could be fetched; a bounded description, never a URL or a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFetchError {
    /// The OpenID configuration could not be fetched or read.
    #[error("the issuer's OpenID configuration could not be fetched")]
    Configuration,
    /// The key set could not be fetched or read.
    #[error("the issuer's signing keys could not be fetched")]
    KeySet,
}

/// Where key sets come from.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The current key set.
    async fn fetch(&self) -> Result<Vec<KeyEntry>, KeyFetchError>;
}

/// No key source (a configuration without a tenant, which validation refuses).
pub struct NoKeys;

#[async_trait]
impl KeySource for NoKeys {
    async fn fetch(&self) -> Result<Vec<KeyEntry>, KeyFetchError> {
        Err(KeyFetchError::Configuration)
    }
}

/// The key set of an OpenID configuration, over HTTPS.
pub struct HttpKeySource {
    /// The gateway's outbound client (its TLS roots trust the emulator in tests).
    http: reqwest::Client,
    /// `…/{tenant}/v2.0/.well-known/openid-configuration`.
    discovery: Url,
}

impl HttpKeySource {
    /// A source reading `discovery`'s `jwks_uri`.
    pub fn new(http: reqwest::Client, discovery: Url) -> Self {
        Self { http, discovery }
    }

    /// The discovery URL (a reload keeps the cache when it is unchanged).
    pub fn discovery(&self) -> &Url {
        &self.discovery
    }
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: Url,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn fetch(&self) -> Result<Vec<KeyEntry>, KeyFetchError> {
        let discovery: Discovery = get_json(&self.http, self.discovery.clone())
            .await
            .map_err(|()| KeyFetchError::Configuration)?;
        if discovery.jwks_uri.scheme() != "https" {
            return Err(KeyFetchError::Configuration);
        }
        let set: KeySet = get_json(&self.http, discovery.jwks_uri)
            .await
            .map_err(|()| KeyFetchError::KeySet)?;
        // An entry that does not parse is skipped, not the whole set.
        Ok(set
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value(value).ok())
            .collect())
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: Url,
) -> Result<T, ()> {
    let response = http
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|error| {
            tracing::warn!(error = %crate::telemetry::error_chain(&error.without_url()), "Entra key fetch failed");
        })?;
    if !response.status().is_success() {
        tracing::warn!(
            status = response.status().as_u16(),
            "Entra key fetch refused"
        );
        return Err(());
    }
    // Read as bytes, then parsed: reqwest's `json` feature is not in the gateway-only build.
    let body = response.bytes().await.map_err(|error| {
        tracing::warn!(error = %crate::telemetry::error_chain(&error.without_url()), "Entra key fetch failed while reading the answer");
    })?;
    serde_json::from_slice::<T>(&body).map_err(|_| {
        tracing::warn!("Entra key fetch answered something that is not the expected JSON");
    })
}

/// Why no key verifies a token's `kid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key with this id, after the refetch the floor allowed (if any).
    #[error("the token's signing key (kid) is not one of the issuer's keys")]
    UnknownKey,
    /// No key at all: the key endpoint could not be reached yet.
    #[error("{0}; no signing key is known yet")]
    Unavailable(KeyFetchError),
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<SigningKey>>,
    /// Last successful fetch.
    fetched_at: Option<Instant>,
    /// Last fetch tried, whatever came of it.
    attempted_at: Option<Instant>,
    /// Last fetch caused by an unknown `kid`.
    unknown_kid_at: Option<Instant>,
    /// Why the last fetch failed, if it did.
    failure: Option<KeyFetchError>,
}

/// The cached signing keys of one issuer.
pub struct SigningKeys {
    source: Box<dyn KeySource>,
    /// The cache; readers never wait for a fetch.
    cache: parking_lot::RwLock<Cache>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    /// An empty cache over `source`; the first token fetches.
    pub fn new(source: Box<dyn KeySource>) -> Self {
        Self {
            source,
            cache: parking_lot::RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key `kid`, fetching the key set when it is stale, empty, or lacks `kid` (at most once
    /// per [`REFETCH_FLOOR`] for unknown ids).
    pub async fn find(&self, kid: &str) -> Result<Arc<SigningKey>, KeyLookupError> {
        let (cached, due) = self.look(kid);
        if let Some(key) = cached {
            if due {
                // Hourly refresh: one caller fetches, the others keep using what is cached.
                if let Ok(_guard) = self.fetching.try_lock() {
                    if self.look(kid).1 {
                        self.refresh(false).await;
                    }
                }
                // A refreshed set that dropped the key no longer vouches for it.
                return self.look(kid).0.ok_or(KeyLookupError::UnknownKey);
            }
            return Ok(key);
        }
        let _guard = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        let (cached, due) = self.look(kid);
        if let Some(key) = cached {
            return Ok(key);
        }
        if due {
            self.refresh(false).await;
        } else if !self.is_empty() && self.unknown_kid_allowed() {
            self.refresh(true).await;
        }
        let cache = self.cache.read();
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        match (cache.keys.is_empty(), cache.failure) {
            (true, Some(failure)) => Err(KeyLookupError::Unavailable(failure)),
            _ => Err(KeyLookupError::UnknownKey),
        }
    }

    /// The cached key, and whether a scheduled fetch is due (stale or empty, and past the
    /// retry spacing).
    fn look(&self, kid: &str) -> (Option<Arc<SigningKey>>, bool) {
        let cache = self.cache.read();
        let now = Instant::now();
        let stale = cache
            .fetched_at
            .is_none_or(|at| now.duration_since(at) >= REFRESH_AFTER);
        let spacing = if cache.keys.is_empty() {
            EMPTY_RETRY_AFTER
        } else {
            REFETCH_FLOOR
        };
        let may_try = cache
            .attempted_at
            .is_none_or(|at| now.duration_since(at) >= spacing);
        (cache.keys.get(kid).cloned(), stale && may_try)
    }

    fn unknown_kid_allowed(&self) -> bool {
        let cache = self.cache.read();
        cache
            .unknown_kid_at
            .is_none_or(|at| Instant::now().duration_since(at) >= REFETCH_FLOOR)
    }

    async fn refresh(&self, for_unknown_kid: bool) {
        let outcome = self.source.fetch().await;
        let now = Instant::now();
        let mut cache = self.cache.write();
        cache.attempted_at = Some(now);
        if for_unknown_kid {
            cache.unknown_kid_at = Some(now);
        }
        match outcome {
            Ok(entries) => {
                let keys = usable_keys(entries);
                if keys.is_empty() {
                    // An empty set would lock every caller out: keep the old keys.
                    cache.failure = Some(KeyFetchError::KeySet);
                } else {
                    cache.keys = keys;
                    cache.fetched_at = Some(now);
                    cache.failure = None;
                }
            }
            // The cached keys stay in use while the endpoint is down.
            Err(failure) => cache.failure = Some(failure),
        }
    }

    /// Number of keys cached.
    pub fn len(&self) -> usize {
        self.cache.read().keys.len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The RS256 signing keys of a key set, by `kid`.
fn usable_keys(entries: Vec<KeyEntry>) -> HashMap<String, Arc<SigningKey>> {
    entries
        .into_iter()
        .filter(|entry| entry.kty == "RSA")
        .filter(|entry| entry.usage.as_deref().is_none_or(|usage| usage == "sig"))
        .filter(|entry| entry.alg.as_deref().is_none_or(|alg| alg == "RS256"))
        .filter_map(|entry| {
            let kid = entry.kid?;
            let decoding =
                DecodingKey::from_rsa_components(entry.n.as_deref()?, entry.e.as_deref()?).ok()?;
            Some((
                kid,
                Arc::new(SigningKey {
                    decoding,
                    issuer: entry.issuer,
                }),
            ))
        })
        .take(MAX_KEYS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A key set of given ids, counting fetches; `down` makes every fetch fail.
    struct Counted {
        kids: parking_lot::Mutex<Vec<&'static str>>,
        fetches: Arc<AtomicUsize>,
        down: Arc<AtomicBool>,
    }

    #[async_trait]
    impl KeySource for Counted {
        async fn fetch(&self) -> Result<Vec<KeyEntry>, KeyFetchError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(KeyFetchError::KeySet);
            }
            Ok(self
                .kids
                .lock()
                .iter()
                .map(|kid| KeyEntry {
                    kty: "RSA".into(),
                    kid: Some((*kid).into()),
                    usage: Some("sig".into()),
                    alg: None,
                    // Any modulus parses; these keys verify nothing, the cache is what is tested.
                    n: Some("sXch".into()),
                    e: Some("AQAB".into()),
                    issuer: None,
                })
                .collect())
        }
    }

    fn keys(kids: &[&'static str]) -> (SigningKeys, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let source = Counted {
            kids: parking_lot::Mutex::new(kids.to_vec()),
            fetches: fetches.clone(),
            down: down.clone(),
        };
        (SigningKeys::new(Box::new(source)), fetches, down)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_refetches_at_most_once_per_five_minutes_of_tokio_time() {
        let (keys, fetches, _) = keys(&["a"]);
        assert!(keys.find("a").await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(keys.find("b").await.err(), Some(KeyLookupError::UnknownKey));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "the first unknown kid refetches"
        );
        for _ in 0..100 {
            assert!(keys.find("c").await.is_err());
        }
        tokio::time::advance(REFETCH_FLOOR - Duration::from_secs(1)).await;
        assert!(keys.find("d").await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "the floor holds");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(keys.find("e").await.is_err());
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            3,
            "once the floor has passed"
        );
        assert!(keys.find("a").await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 3, "known ids never fetch");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_refresh_hourly_and_stay_in_use_while_the_endpoint_is_down() {
        let (keys, fetches, down) = keys(&["a"]);
        assert!(keys.find("a").await.is_ok());
        down.store(true, Ordering::SeqCst);
        tokio::time::advance(REFRESH_AFTER).await;
        assert!(keys.find("a").await.is_ok(), "the cached key is kept");
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "the hourly refresh was tried"
        );
        assert!(keys.find("a").await.is_ok());
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "failed refreshes are spaced"
        );
        tokio::time::advance(REFETCH_FLOOR).await;
        down.store(false, Ordering::SeqCst);
        assert!(keys.find("a").await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_key_cached_a_down_endpoint_is_a_clear_reason_and_retried_soon() {
        let (keys, fetches, down) = keys(&["a"]);
        down.store(true, Ordering::SeqCst);
        let error = keys.find("a").await.err();
        assert_eq!(
            error,
            Some(KeyLookupError::Unavailable(KeyFetchError::KeySet))
        );
        assert!(keys.find("a").await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        down.store(false, Ordering::SeqCst);
        tokio::time::advance(EMPTY_RETRY_AFTER).await;
        assert!(keys.find("a").await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
