//! The emulated Entra's token signing keys: RSA keys (rcgen, as the application certificates),
//! published as a JSON Web Key Set, rotated on request.
//!
//! Every key ever used stays published (as Entra keeps the previous key during a rollover), the
//! newest signs. The key set can be taken "down" to test a gateway whose key endpoint fails.

use super::EmulatorError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One signing key.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    /// base64url modulus.
    n: String,
    /// base64url exponent.
    e: String,
}

/// The keys, the newest last; and the key endpoint's counters and outage switch.
pub(crate) struct SigningKeys {
    keys: parking_lot::RwLock<Vec<Arc<SigningKey>>>,
    /// Whether the OpenID configuration and the key set answer 503.
    down: AtomicBool,
    /// Key set requests served (whatever the answer).
    jwks_requests: AtomicU64,
    /// OpenID configuration requests served.
    configuration_requests: AtomicU64,
}

/// One key of the published set.
#[derive(Serialize)]
pub(crate) struct PublishedKey {
    kty: &'static str,
    #[serde(rename = "use")]
    usage: &'static str,
    kid: String,
    n: String,
    e: String,
    /// Entra's extension: the issuer template the key signs for.
    issuer: String,
}

/// The counters and the current key, for `GET /_emulator/keys`.
#[derive(Serialize)]
pub(crate) struct KeysView {
    /// The key that signs now.
    pub current: String,
    /// Every published key id, oldest first.
    pub kids: Vec<String>,
    /// Key set requests so far.
    pub jwks_requests: u64,
    /// OpenID configuration requests so far.
    pub openid_configuration_requests: u64,
    /// Whether the key endpoints answer 503.
    pub down: bool,
}

impl SigningKeys {
    /// One fresh key.
    pub fn new() -> Result<Self, EmulatorError> {
        let keys = Self {
            keys: parking_lot::RwLock::new(Vec::new()),
            down: AtomicBool::new(false),
            jwks_requests: AtomicU64::new(0),
            configuration_requests: AtomicU64::new(0),
        };
        keys.rotate()?;
        Ok(keys)
    }

    /// Starts signing with a new key (the old ones stay published); its id.
    pub fn rotate(&self) -> Result<String, EmulatorError> {
        let key = generate()?;
        let kid = key.kid.clone();
        self.keys.write().push(Arc::new(key));
        Ok(kid)
    }

    /// Signs `claims` with the newest key (RS256, its `kid`).
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, EmulatorError> {
        let key = self
            .keys
            .read()
            .last()
            .cloned()
            .ok_or_else(|| EmulatorError::Internal("no signing key".into()))?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|error| EmulatorError::Internal(format!("signing a caller token: {error}")))
    }

    /// The published key set, with `issuer` templates under `authority`; `None` while down.
    pub fn published(&self, authority: &str) -> Option<Vec<PublishedKey>> {
        self.jwks_requests.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.keys
                .read()
                .iter()
                .map(|key| PublishedKey {
                    kty: "RSA",
                    usage: "sig",
                    kid: key.kid.clone(),
                    n: key.n.clone(),
                    e: key.e.clone(),
                    issuer: format!("{authority}/{{tenantid}}/v2.0"),
                })
                .collect(),
        )
    }

    /// Counts an OpenID configuration request; whether it may be answered (not down).
    pub fn configuration_served(&self) -> bool {
        self.configuration_requests.fetch_add(1, Ordering::Relaxed);
        !self.down.load(Ordering::Relaxed)
    }

    /// Takes the key endpoints down (503) or brings them back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// The counters and keys.
    pub fn view(&self) -> KeysView {
        let keys = self.keys.read();
        KeysView {
            current: keys.last().map(|key| key.kid.clone()).unwrap_or_default(),
            kids: keys.iter().map(|key| key.kid.clone()).collect(),
            jwks_requests: self.jwks_requests.load(Ordering::Relaxed),
            openid_configuration_requests: self.configuration_requests.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        }
    }
}

/// A fresh RSA 2048 key: rcgen generates it (as the application certificates), aws-lc-rs reads
/// its public modulus and exponent for the key set.
fn generate() -> Result<SigningKey, EmulatorError> {
    let internal = |what: &str| EmulatorError::Internal(format!("caller signing key: {what}"));
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .map_err(|_| internal("generation failed"))?;
    let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
        .map_err(|_| internal("not a PEM RSA key"))?;
    let rsa = aws_lc_rs::rsa::KeyPair::from_pkcs8(pair.serialized_der())
        .map_err(|_| internal("not a PKCS#8 RSA key"))?;
    let public = aws_lc_rs::signature::KeyPair::public_key(&rsa);
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    // The thumbprint-like id Entra uses: here the first bytes of the modulus' SHA-256.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, n.as_bytes());
    let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..15]);
    Ok(SigningKey {
        kid,
        encoding,
        n,
        e,
    })
}
