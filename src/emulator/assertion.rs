//! Verification of certificate client assertions (RFC 7523 JWT bearer), as Entra checks them:
//! RS256 signature by the registered certificate's key (named by `x5t` or `x5t#S256`), audience
//! = the token endpoint, `iss` = `sub` = client id, inside its validity window.
//!
//! Times are checked against the *real* clock, not the emulator's: the client signs with its
//! own clock, which `advance_clock` cannot move, and a test that fast-forwards token expiry must
//! still be able to renew with a certificate.

use super::tls::AppCertificate;
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// Clock skew Entra tolerates on `nbf` and `exp`.
const SKEW_SECONDS: i64 = 300;

/// Why an assertion was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AssertionError {
    /// Not three base64url parts of JSON.
    #[error("JWT token is invalid or malformed.")]
    Malformed,
    /// `alg` is not RS256.
    #[error("Invalid JWT token. '{0}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256'.")]
    UnsupportedAlgorithm(String),
    /// No registered certificate matches the thumbprint.
    #[error("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]")]
    KeyNotFound {
        /// Thumbprint the client named (hex).
        thumbprint: String,
        /// The client id.
        client_id: String,
    },
    /// The registered certificate is expired (the `expired-secret` profile).
    #[error("The certificate with identifier used to sign the client assertion is expired on application. [Reason - The key used is expired., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]")]
    CertificateExpired {
        /// Thumbprint the client named (hex).
        thumbprint: String,
        /// The client id.
        client_id: String,
    },
    /// The signature does not verify with the registered key.
    #[error("Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value.]")]
    BadSignature,
    /// `aud` is not this token endpoint.
    #[error("Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials.")]
    WrongAudience,
    /// `iss` or `sub` is not the client id.
    #[error("Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials.")]
    WrongIssuer,
    /// Outside `nbf`..`exp` (or no `exp`).
    #[error("Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {exp}.")]
    OutsideValidity {
        /// Real now (Unix seconds).
        now: i64,
        /// `nbf`, or `-` if absent.
        nbf: String,
        /// `exp`, or `-` if absent.
        exp: String,
    },
}

impl AssertionError {
    /// The AADSTS number Entra uses for this refusal.
    pub fn code(&self) -> i64 {
        match self {
            AssertionError::Malformed => 50027,
            AssertionError::UnsupportedAlgorithm(_) => 5002738,
            AssertionError::KeyNotFound { .. }
            | AssertionError::CertificateExpired { .. }
            | AssertionError::BadSignature => 700027,
            AssertionError::WrongAudience => 700023,
            AssertionError::WrongIssuer => 700021,
            AssertionError::OutsideValidity { .. } => 700024,
        }
    }

    /// Whether Entra calls it `invalid_request` (malformed) rather than `invalid_client`.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            AssertionError::Malformed | AssertionError::UnsupportedAlgorithm(_)
        )
    }
}

/// What the assertion must say besides its signature.
pub(crate) struct Expected<'a> {
    /// The `client_id` form parameter.
    pub client_id: &'a str,
    /// Accepted audiences, lowercase, without trailing slash.
    pub audiences: &'a [String],
    /// Real now, Unix seconds.
    pub now: i64,
    /// The certificate registered for the client, if it exists yet.
    pub certificate: Option<&'a AppCertificate>,
    /// The certificate is expired (`expired-secret`) or revoked (`revoked`).
    pub certificate_unusable: Option<Unusable>,
}

/// Why a registered certificate cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// Removed from the app registration.
    Revoked,
    /// Past its end date.
    Expired,
}

fn decode_json(part: &str) -> Result<Value, AssertionError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AssertionError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)
}

/// Verifies `assertion` against `expected`.
pub(crate) fn verify(assertion: &str, expected: &Expected<'_>) -> Result<(), AssertionError> {
    let mut parts = assertion.trim().split('.');
    let (Some(header_part), Some(claims_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    let header = decode_json(header_part)?;
    let claims = decode_json(claims_part)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_part.trim_end_matches('='))
        .map_err(|_| AssertionError::Malformed)?;
    if !header.is_object() || !claims.is_object() {
        return Err(AssertionError::Malformed);
    }

    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "RS256" {
        return Err(AssertionError::UnsupportedAlgorithm(alg.to_owned()));
    }

    let x5t = header.get("x5t").and_then(Value::as_str);
    let x5t_s256 = header.get("x5t#S256").and_then(Value::as_str);
    let thumbprint = || super::tls::hex_thumbprint(x5t.or(x5t_s256));
    let certificate = match expected.certificate {
        Some(certificate)
            if certificate.is_named_by(x5t, x5t_s256)
                && expected.certificate_unusable != Some(Unusable::Revoked) =>
        {
            certificate
        }
        _ => {
            return Err(AssertionError::KeyNotFound {
                thumbprint: thumbprint(),
                client_id: expected.client_id.to_owned(),
            })
        }
    };
    if expected.certificate_unusable == Some(Unusable::Expired) {
        return Err(AssertionError::CertificateExpired {
            thumbprint: thumbprint(),
            client_id: expected.client_id.to_owned(),
        });
    }

    let signed = &assertion.trim()[..header_part.len() + 1 + claims_part.len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &certificate.public_key_pkcs1)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| AssertionError::BadSignature)?;

    let audience_matches = |value: &Value| {
        value.as_str().is_some_and(|aud| {
            let aud = aud.trim_end_matches('/').to_ascii_lowercase();
            expected.audiences.contains(&aud)
        })
    };
    let audience_ok = match claims.get("aud") {
        Some(Value::Array(values)) => values.iter().any(audience_matches),
        Some(value) => audience_matches(value),
        None => false,
    };
    if !audience_ok {
        return Err(AssertionError::WrongAudience);
    }

    let client_matches = |claim: &str| {
        claims
            .get(claim)
            .and_then(Value::as_str)
            .is_some_and(|value| value.eq_ignore_ascii_case(expected.client_id))
    };
    if !client_matches("iss") || !client_matches("sub") {
        return Err(AssertionError::WrongIssuer);
    }

    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    let expired = exp.is_none_or(|exp| exp + SKEW_SECONDS <= expected.now);
    let premature = nbf.is_some_and(|nbf| nbf - SKEW_SECONDS > expected.now);
    if expired || premature {
        let show = |value: Option<i64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
        return Err(AssertionError::OutsideValidity {
            now: expected.now,
            nbf: show(nbf),
            exp: show(exp),
        });
    }
    Ok(())
}

/// The audiences Entra accepts for a tenant's token endpoint: the v2 and v1 token URLs and the
/// issuer forms, under each host name the emulator answers to, with the tenant named by id or
/// domain. Lowercase, no trailing slash.
pub(crate) fn audiences(hosts: &[String], tenant_names: &[String]) -> Vec<String> {
    let mut audiences = Vec::new();
    for host in hosts {
        let host = host.trim_end_matches('/').to_ascii_lowercase();
        for tenant in tenant_names {
            let tenant = tenant.to_ascii_lowercase();
            for suffix in ["/oauth2/v2.0/token", "/oauth2/token", "/v2.0", ""] {
                audiences.push(format!("{host}/{tenant}{suffix}"));
            }
        }
    }
    audiences
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use secrecy::ExposeSecret;
    use serde_json::json;

    const CLIENT: &str = "11111111-2222-4333-8444-555555555555";

    fn sign(certificate: &AppCertificate, header: Header, claims: &Value) -> String {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let key = EncodingKey::from_rsa_pem(certificate.private_key_pem.expose_secret().as_bytes())
            .unwrap();
        encode(&header, claims, &key).unwrap()
    }

    fn rs256(certificate: &AppCertificate) -> Header {
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(certificate.x5t());
        header
    }

    #[test]
    fn assertions_are_checked_in_entra_order() {
        let certificate = AppCertificate::generate("contoso").unwrap();
        let other = AppCertificate::generate("fabrikam").unwrap();
        let audiences = audiences(&["https://127.0.0.1:1".into()], &["tid".into()]);
        let now = 1_700_000_000;
        let expected = Expected {
            client_id: CLIENT,
            audiences: &audiences,
            now,
            certificate: Some(&certificate),
            certificate_unusable: None,
        };
        let claims = |aud: &str, iss: &str, exp: i64| json!({"aud": aud, "iss": iss, "sub": CLIENT, "exp": exp, "nbf": now - 10, "jti": "x"});
        let good_aud = "https://127.0.0.1:1/tid/oauth2/v2.0/token";

        let valid = sign(
            &certificate,
            rs256(&certificate),
            &claims(good_aud, CLIENT, now + 600),
        );
        assert_eq!(verify(&valid, &expected), Ok(()));

        let mut s256 = Header::new(jsonwebtoken::Algorithm::RS256);
        s256.x5t_s256 = Some(certificate.x5t_s256());
        let by_s256 = sign(&certificate, s256, &claims(good_aud, CLIENT, now + 600));
        assert_eq!(verify(&by_s256, &expected), Ok(()));

        let forged = sign(
            &other,
            rs256(&certificate),
            &claims(good_aud, CLIENT, now + 600),
        );
        assert_eq!(
            verify(&forged, &expected),
            Err(AssertionError::BadSignature)
        );

        let unknown = sign(&other, rs256(&other), &claims(good_aud, CLIENT, now + 600));
        assert_eq!(
            verify(&unknown, &expected).map_err(|e| e.code()),
            Err(700027)
        );

        let wrong_aud = sign(
            &certificate,
            rs256(&certificate),
            &claims(
                "https://login.microsoftonline.com/tid/oauth2/v2.0/token",
                CLIENT,
                now + 600,
            ),
        );
        assert_eq!(
            verify(&wrong_aud, &expected),
            Err(AssertionError::WrongAudience)
        );

        let wrong_iss = sign(
            &certificate,
            rs256(&certificate),
            &claims(good_aud, "someone-else", now + 600),
        );
        assert_eq!(
            verify(&wrong_iss, &expected),
            Err(AssertionError::WrongIssuer)
        );

        let expired = sign(
            &certificate,
            rs256(&certificate),
            &claims(good_aud, CLIENT, now - 600),
        );
        assert_eq!(
            verify(&expired, &expected).map_err(|e| e.code()),
            Err(700024)
        );

        assert_eq!(verify("a.b", &expected), Err(AssertionError::Malformed));
        assert_eq!(
            verify("!!.??.**", &expected),
            Err(AssertionError::Malformed)
        );
    }

    #[test]
    fn audiences_cover_v1_v2_and_both_tenant_names() {
        let list = audiences(
            &["https://127.0.0.1:9".into(), "https://localhost:9".into()],
            &["ABC".into(), "contoso.onmicrosoft.com".into()],
        );
        assert!(list.contains(&"https://127.0.0.1:9/abc/oauth2/v2.0/token".to_owned()));
        assert!(
            list.contains(&"https://localhost:9/contoso.onmicrosoft.com/oauth2/token".to_owned())
        );
        assert!(list.contains(&"https://127.0.0.1:9/abc/v2.0".to_owned()));
    }
}
