//! Credential material of an app registration: a client secret, or a certificate whose private
//! key signs client assertions. (Stub: see the token work.)

use secrecy::SecretString;
use std::path::Path;
use std::sync::Arc;

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

/// A certificate credential: the certificate (for its thumbprint) and its RSA private key.
pub struct Certificate {}

/// Why a certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file holds no usable certificate or key.
    #[error("{0}")]
    Invalid(String),
}

impl Certificate {
    /// Loads a PEM file (certificate + private key) or a PKCS#12 file (`.pfx`/`.p12`).
    pub fn from_file(
        _path: &Path,
        _password: Option<&SecretString>,
    ) -> Result<Self, CertificateError> {
        Err(CertificateError::Invalid("not implemented yet".into()))
    }
}
