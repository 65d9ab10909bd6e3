//! Credential material of an app registration: a client secret, or an RSA certificate whose
//! private key signs client assertions.
//!
//! This module owns reading certificate files (PEM or PKCS#12, detected by content), checking
//! that they are what Entra ID accepts (an RSA key that belongs to the certificate), and signing
//! the RS256 client assertion JWT that certificate credentials send instead of a secret. It is
//! pure Rust (aws-lc through `jsonwebtoken`, no OpenSSL).
//!
//! It deliberately does not talk to Entra: [`crate::token`] builds azure_identity credentials
//! from what is here and owns token requests and caching.
//!
//! Key material never leaves this module except as a signature: private keys are held in
//! zeroize-on-drop buffers, every `Debug` here is written by hand, and errors never quote file
//! contents.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pkcs8::der::asn1::ObjectIdentifier;
use rustls_pki_types::pem::{PemObject, SectionKind};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use url::Url;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// How an app registration proves itself to Entra ID.
#[derive(Clone)]
pub enum Credential {
    /// A client secret.
    Secret(SecretString),
    /// A certificate and its private key.
    Certificate(Arc<Certificate>),
}

impl Credential {
    /// `"client_secret"` or `"certificate"`: safe to log and show.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Secret(_) => "client_secret",
            Credential::Certificate(_) => "certificate",
        }
    }
}

impl fmt::Debug for Credential {
    // Spelled out so that no future field can leak a secret through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret([redacted])"),
            Credential::Certificate(certificate) => {
                f.debug_tuple("Certificate").field(certificate).finish()
            }
        }
    }
}

/// How long a client assertion is valid. Entra accepts up to an hour; a short lifetime limits
/// replay of a leaked assertion, and one is signed for every token request anyway.
const ASSERTION_LIFETIME_SECONDS: i64 = 10 * 60;

/// `rsaEncryption`: the only key algorithm Entra ID accepts for certificate credentials.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A certificate credential: the certificate (for its thumbprints) and its RSA private key.
///
/// Built once at configuration load and shared by every token request of the registration.
pub struct Certificate {
    /// The leaf certificate (DER); its digests are the thumbprints Entra looks the key up by.
    der: Vec<u8>,
    /// The RSA private key as PKCS#1 DER; `EncodingKey` zeroizes it on drop and redacts `Debug`.
    key: EncodingKey,
    /// `x5t`: base64url SHA-1 of the DER, computed once.
    x5t: String,
    /// `x5t#S256`: base64url SHA-256 of the DER, computed once.
    x5t_s256: String,
    /// SHA-1 thumbprint in upper-case hex, as the Entra portal shows it (for logs and summaries).
    thumbprint: String,
    /// Subject distinguished name, for people.
    subject: String,
    /// End of validity (Unix seconds): an expired certificate is refused by Entra (AADSTS700027).
    not_after: i64,
    /// Size of the RSA modulus in bits.
    key_bits: usize,
}

/// Why a certificate file cannot be used. Messages never quote key material.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// The file holds no usable certificate or key.
    #[error("{0}")]
    Invalid(String),
    /// A key or certificate of another algorithm than RSA.
    #[error("{what} is {algorithm}, but Entra ID accepts only RSA certificates")]
    NotRsa {
        /// `"the private key"` or `"the certificate's public key"`.
        what: &'static str,
        /// The algorithm found, e.g. `an EC key`.
        algorithm: String,
    },
    /// A PKCS#12 file whose password was wrong or missing.
    #[error(
        "the PKCS#12 password is wrong, or the file needs one (certificate.password) and none was given"
    )]
    WrongPassword,
    /// A client assertion could not be signed.
    #[error("cannot sign a client assertion: {0}")]
    Sign(String),
}

impl Certificate {
    /// Loads a PEM file (certificate + RSA private key: PKCS#8 `PRIVATE KEY`, PKCS#1
    /// `RSA PRIVATE KEY` or, with `password`, PKCS#8 `ENCRYPTED PRIVATE KEY`) or a PKCS#12 file
    /// (`.pfx`/`.p12`, with or without password). The format is detected from the content.
    pub fn from_file(
        path: &Path,
        password: Option<&SecretString>,
    ) -> Result<Self, CertificateError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(CertificateError::Read)?);
        Self::from_bytes(&bytes, password)
    }

    /// Like [`Certificate::from_file`], from the file's bytes.
    pub fn from_bytes(
        bytes: &[u8],
        password: Option<&SecretString>,
    ) -> Result<Self, CertificateError> {
        let password = password.map(|p| p.expose_secret());
        let (certificates, keys) = if is_pem(bytes) {
            read_pem(bytes, password)?
        } else if bytes.first() == Some(&0x30) {
            read_pkcs12(bytes, password)?
        } else {
            return Err(CertificateError::Invalid(
                "neither PEM nor PKCS#12 (.pfx/.p12)".into(),
            ));
        };
        Self::from_parts(&certificates, keys)
    }

    /// Picks the certificate that belongs to the (single) RSA private key.
    fn from_parts(certificates: &[Vec<u8>], keys: Vec<KeyDer>) -> Result<Self, CertificateError> {
        let mut keys = keys.into_iter();
        let key = match (keys.next(), keys.next()) {
            (Some(key), None) => key,
            (None, _) => return Err(CertificateError::Invalid("holds no private key".into())),
            (Some(_), Some(_)) => {
                return Err(CertificateError::Invalid(
                    "holds more than one private key; keep only the certificate's".into(),
                ))
            }
        };
        if certificates.is_empty() {
            return Err(CertificateError::Invalid(
                "holds a private key but no certificate".into(),
            ));
        }
        let pkcs1 = key.into_pkcs1()?;
        let key_pair = RsaKeyPair::from_der(&pkcs1).map_err(|error| {
            CertificateError::Invalid(format!(
                "the RSA private key is unusable ({error}); Entra needs 2048 to 8192 bits"
            ))
        })?;
        let public_key = key_pair.public_key().as_ref();

        let mut first_algorithm = None;
        for der in certificates {
            let (_, parsed) = X509Certificate::from_der(der).map_err(|_| {
                CertificateError::Invalid("holds a certificate that is not valid X.509".into())
            })?;
            let spki = &parsed.tbs_certificate.subject_pki;
            let algorithm = spki.algorithm.algorithm.to_id_string();
            if algorithm != RSA_ENCRYPTION.to_string() {
                first_algorithm.get_or_insert(algorithm);
                continue;
            }
            if spki.subject_public_key.data.as_ref() != public_key {
                continue;
            }
            let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der);
            let sha256 = digest::digest(&digest::SHA256, der);
            return Ok(Self {
                der: der.clone(),
                key: EncodingKey::from_rsa_der(&pkcs1),
                x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
                x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
                thumbprint: sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
                subject: parsed.subject().to_string(),
                not_after: parsed.validity().not_after.timestamp(),
                key_bits: key_pair.public_modulus_len() * 8,
            });
        }
        match first_algorithm {
            Some(algorithm) if certificates.len() == 1 => Err(CertificateError::NotRsa {
                what: "the certificate's public key",
                algorithm: algorithm_name(&algorithm),
            }),
            _ => Err(CertificateError::Invalid(
                "the private key does not belong to the certificate (no certificate in the file has its public key)"
                    .into(),
            )),
        }
    }

    /// SHA-1 thumbprint in upper-case hex, as the Entra portal lists the app's certificates.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The certificate's subject distinguished name.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// End of the certificate's validity, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The certificate itself (DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Signs a client assertion for `client_id` at the token endpoint `audience` (see
    /// [`token_endpoint`]): an RS256 JWT with the certificate's `x5t` and `x5t#S256`, valid
    /// for ten minutes from now, with a random `jti`. The result is a credential: never log it.
    pub fn client_assertion(
        &self,
        audience: &str,
        client_id: &str,
    ) -> Result<String, CertificateError> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AssertionClaims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECONDS,
        };
        // jsonwebtoken's errors name the failing step, never the key.
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|error| CertificateError::Sign(error.to_string()))
    }
}

impl fmt::Debug for Certificate {
    // Identifies the certificate; the key appears only as its size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("thumbprint", &self.thumbprint)
            .field("not_after", &self.not_after)
            .field(
                "key",
                &format_args!("RSA {} bits [redacted]", self.key_bits),
            )
            .finish()
    }
}

/// Entra's token endpoint of a tenant, `{authority_host}/{tenant_id}/oauth2/v2.0/token`: where
/// token requests go and what a client assertion's `aud` must name. Computed exactly as
/// azure_identity computes its endpoint, so that the two can never disagree.
pub fn token_endpoint(authority_host: &Url, tenant_id: &str) -> Result<Url, url::ParseError> {
    authority_host.join(&format!("/{tenant_id}/oauth2/v2.0/token"))
}

/// Claims of a client assertion, as Entra requires for certificate credentials.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// A private key as found in a file, before it is checked to be RSA.
enum KeyDer {
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1(Zeroizing<Vec<u8>>),
    /// PKCS#8 `PrivateKeyInfo` (any algorithm).
    Pkcs8(Zeroizing<Vec<u8>>),
    /// SEC1 `ECPrivateKey`: never acceptable, kept to say so clearly.
    Sec1,
}

impl KeyDer {
    /// The key as PKCS#1, or why it is not an RSA key.
    fn into_pkcs1(self) -> Result<Zeroizing<Vec<u8>>, CertificateError> {
        match self {
            KeyDer::Pkcs1(der) => Ok(der),
            KeyDer::Sec1 => Err(CertificateError::NotRsa {
                what: "the private key",
                algorithm: "an EC key".into(),
            }),
            KeyDer::Pkcs8(der) => {
                let info = pkcs8::PrivateKeyInfoRef::try_from(der.as_slice()).map_err(|_| {
                    CertificateError::Invalid("the PKCS#8 private key is malformed".into())
                })?;
                if info.algorithm.oid != RSA_ENCRYPTION {
                    return Err(CertificateError::NotRsa {
                        what: "the private key",
                        algorithm: algorithm_name(&info.algorithm.oid.to_string()),
                    });
                }
                Ok(Zeroizing::new(info.private_key.as_bytes().to_vec()))
            }
        }
    }
}

/// A readable name for a key algorithm OID.
fn algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.2.1" => "an EC key".into(),
        "1.2.840.113549.1.1.10" => "an RSA-PSS key (Entra needs plain rsaEncryption)".into(),
        "1.3.101.112" => "an Ed25519 key".into(),
        "1.3.101.113" => "an Ed448 key".into(),
        "1.2.840.10040.4.1" => "a DSA key".into(),
        other => format!("a key of algorithm {other}"),
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|window| window == b"-----BEGIN ")
}

const ENCRYPTED_KEY_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_KEY_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// Certificates and private keys of a PEM file, in file order.
fn read_pem(
    bytes: &[u8],
    password: Option<&str>,
) -> Result<(Vec<Vec<u8>>, Vec<KeyDer>), CertificateError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CertificateError::Invalid("a PEM file that is not text".into()))?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(CertificateError::Invalid(
            "the private key uses legacy OpenSSL PEM encryption; convert it to PKCS#8 \
             (`openssl pkcs8 -topk8`) or use a PKCS#12 file"
                .into(),
        ));
    }
    let mut certificates = Vec::new();
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = section.map_err(|_| {
            CertificateError::Invalid("a PEM section is malformed (bad base64 or markers)".into())
        })?;
        let der = Zeroizing::new(der);
        match kind {
            SectionKind::Certificate => certificates.push(der.to_vec()),
            SectionKind::RsaPrivateKey => keys.push(KeyDer::Pkcs1(der)),
            SectionKind::PrivateKey => keys.push(KeyDer::Pkcs8(der)),
            SectionKind::EcPrivateKey => keys.push(KeyDer::Sec1),
            _ => {}
        }
    }
    // rustls' PEM reader skips sections it does not know, such as encrypted PKCS#8.
    let mut rest = text;
    while let Some(start) = rest.find(ENCRYPTED_KEY_BEGIN) {
        let Some(end) = rest[start..].find(ENCRYPTED_KEY_END) else {
            return Err(CertificateError::Invalid(
                "an ENCRYPTED PRIVATE KEY section has no end marker".into(),
            ));
        };
        let end = start + end + ENCRYPTED_KEY_END.len();
        keys.push(KeyDer::Pkcs8(decrypt_pkcs8(&rest[start..end], password)?));
        rest = &rest[end..];
    }
    Ok((certificates, keys))
}

/// Decrypts one `ENCRYPTED PRIVATE KEY` PEM block (PBES2).
fn decrypt_pkcs8(
    block: &str,
    password: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, CertificateError> {
    let Some(password) = password else {
        return Err(CertificateError::Invalid(
            "the private key is encrypted and no password was given (certificate.password)".into(),
        ));
    };
    let (_, document) = pkcs8::der::Document::from_pem(block).map_err(|_| {
        CertificateError::Invalid("the ENCRYPTED PRIVATE KEY section is malformed".into())
    })?;
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(document.as_bytes()).map_err(|_| {
        CertificateError::Invalid("the ENCRYPTED PRIVATE KEY section is malformed".into())
    })?;
    let decrypted = info.decrypt(password).map_err(|_| {
        CertificateError::Invalid(
            "cannot decrypt the private key: wrong password (certificate.password) or an \
             unsupported cipher"
                .into(),
        )
    })?;
    Ok(Zeroizing::new(decrypted.as_bytes().to_vec()))
}

/// Certificates and private keys of a PKCS#12 file.
fn read_pkcs12(
    bytes: &[u8],
    password: Option<&str>,
) -> Result<(Vec<Vec<u8>>, Vec<KeyDer>), CertificateError> {
    // A file exported "without password" is protected by the empty password.
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(bytes, password.unwrap_or("")).map_err(
        |error| match error {
            p12_keystore::error::Error::MacError(_)
            | p12_keystore::error::Error::UnpadError
            | p12_keystore::error::Error::Pkcs5Error(_) => CertificateError::WrongPassword,
            p12_keystore::error::Error::UnsupportedEncryptionScheme
            | p12_keystore::error::Error::UnsupportedMacAlgorithm => CertificateError::Invalid(
                "the PKCS#12 file uses an unsupported encryption or MAC algorithm; re-export it \
                 with AES-256 and SHA-256"
                    .into(),
            ),
            _ if X509Certificate::from_der(bytes).is_ok() => CertificateError::Invalid(
                "holds a DER certificate without its private key; use a PEM file with both, or \
                 a PKCS#12 file"
                    .into(),
            ),
            _ => CertificateError::Invalid("neither PEM nor a valid PKCS#12 file".into()),
        },
    )?;
    let certificates = archive
        .certs
        .iter()
        .map(|bag| bag.cert.as_der().to_vec())
        .collect();
    let keys = archive
        .keys
        .iter()
        .map(|bag| KeyDer::Pkcs8(Zeroizing::new(bag.key.as_der().to_vec())))
        .collect();
    Ok((certificates, keys))
}

#[cfg(test)]
mod tests;
