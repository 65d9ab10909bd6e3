//! Key material the emulator generates with rcgen: the CA and server certificate it serves HTTPS
//! with, and the RSA certificates registered on certificate tenants' app registrations.
//!
//! Everything here uses the aws-lc-rs provider explicitly (several rustls providers may be
//! compiled into one binary). Nothing is read from disk and no key ever leaves this process
//! except through `Emulator::write_config` and the library API.

use super::EmulatorError;
use aws_lc_rs::digest;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The server side of TLS: what clients must trust, and the rustls configuration.
pub(crate) struct ServerTls {
    /// The CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// Server configuration presenting a leaf certificate issued by that CA.
    pub config: rustls::ServerConfig,
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> EmulatorError {
    move |source| EmulatorError::Certificate { what, source }
}

/// Generates a fresh CA and a server certificate for `localhost`, `127.0.0.1`, `::1` and
/// `extra_names` (the bind address when it is neither).
pub(crate) fn server_tls(extra_names: &[String]) -> Result<ServerTls, EmulatorError> {
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().map_err(rcgen_error("the CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "scoregate emulator CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "scoregate");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::days(1);
    ca_params.not_after = now + Duration::days(365);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(rcgen_error("the CA certificate"))?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let leaf_key = KeyPair::generate().map_err(rcgen_error("the server key"))?;
    let mut leaf_params =
        CertificateParams::new(names).map_err(rcgen_error("the server certificate"))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "scoregate emulator");
    leaf_params.is_ca = IsCa::NoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = now - Duration::days(1);
    leaf_params.not_after = now + Duration::days(365);
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(rcgen_error("the server certificate"))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(EmulatorError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(EmulatorError::Tls)?;
    // HTTP/1.1 only: a dropped HTTP/1.1 connection cancels its request handler, which keeps
    // the in-flight gauge honest for the `hang` profile.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(ServerTls {
        ca_pem: ca_cert.pem(),
        config,
    })
}

/// A certificate registered on a certificate tenant's app registration.
pub(crate) struct AppCertificate {
    /// The self-signed certificate, PEM.
    pub certificate_pem: String,
    /// Its RSA private key, PKCS#8 PEM.
    pub private_key_pem: SecretString,
    /// The public key as PKCS#1 `RSAPublicKey` DER, what RS256 verification takes.
    pub public_key_pkcs1: Vec<u8>,
    /// SHA-1 of the certificate DER (`x5t`).
    pub sha1: Vec<u8>,
    /// SHA-256 of the certificate DER (`x5t#S256`).
    pub sha256: Vec<u8>,
}

impl AppCertificate {
    /// A fresh RSA 2048 key and a two-year self-signed certificate (Entra requires RSA).
    pub fn generate(slug: &str) -> Result<Self, EmulatorError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(rcgen_error("an application certificate key"))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{slug} scoregate app"));
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(730);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let certificate = params
            .self_signed(&key)
            .map_err(rcgen_error("an application certificate"))?;
        let der: &CertificateDer<'_> = certificate.der();
        Ok(Self {
            certificate_pem: certificate.pem(),
            private_key_pem: SecretString::from(key.serialize_pem()),
            public_key_pkcs1: key.public_key_raw().to_vec(),
            sha1: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref())
                .as_ref()
                .to_vec(),
            sha256: digest::digest(&digest::SHA256, der.as_ref())
                .as_ref()
                .to_vec(),
        })
    }

    /// The `x5t` header value (base64url SHA-1 thumbprint).
    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.sha1)
    }

    /// The `x5t#S256` header value (base64url SHA-256 thumbprint).
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.sha256)
    }

    /// Whether a JWT header's thumbprints name this certificate. Clients differ in encoding
    /// (azure_identity sends standard base64, RFC 7515 says base64url, some send hex): accept
    /// all three, as Entra does.
    pub fn is_named_by(&self, x5t: Option<&str>, x5t_s256: Option<&str>) -> bool {
        let matches = |value: &str, expected: &[u8]| {
            decode_thumbprint(value).is_some_and(|bytes| bytes == expected)
        };
        x5t.is_some_and(|value| matches(value, &self.sha1))
            || x5t_s256.is_some_and(|value| matches(value, &self.sha256))
    }
}

fn decode_thumbprint(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    // 40 or 64 hex digits are a SHA-1 or SHA-256 in hex; anything else is base64.
    if value.len() == 40 || value.len() == 64 {
        if let Ok(bytes) = hex::decode(value) {
            return Some(bytes);
        }
    }
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(value))
        .ok()
}

/// Hex (uppercase) thumbprint, as the Azure portal shows it; used in error descriptions.
pub(crate) fn hex_thumbprint(value: Option<&str>) -> String {
    value
        .and_then(decode_thumbprint)
        .map(hex::encode_upper)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_tls_builds_with_the_aws_lc_provider() {
        let tls = server_tls(&["10.0.0.1".to_owned()]).unwrap();
        assert!(tls.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn app_certificates_are_named_by_any_thumbprint_encoding() {
        let certificate = AppCertificate::generate("contoso").unwrap();
        assert!(certificate.is_named_by(Some(&certificate.x5t()), None));
        assert!(certificate.is_named_by(None, Some(&certificate.x5t_s256())));
        let standard = STANDARD.encode(&certificate.sha1);
        assert!(certificate.is_named_by(Some(&standard), None));
        let hex = hex_thumbprint(Some(&certificate.x5t()));
        assert_eq!(hex.len(), 40);
        assert!(certificate.is_named_by(Some(&hex), None));
        assert_eq!(hex, hex.to_ascii_uppercase());
        assert!(certificate.is_named_by(Some(&hex.to_ascii_lowercase()), None));
        let hex_s256 = hex_thumbprint(Some(&certificate.x5t_s256()));
        assert_eq!(hex_s256.len(), 64);
        assert!(certificate.is_named_by(None, Some(&hex_s256)));
        assert!(!certificate.is_named_by(Some("AAAA"), None));
        assert!(!certificate.is_named_by(None, None));
    }
}
