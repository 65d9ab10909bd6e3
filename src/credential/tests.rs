//! Credential material under test: PEM and PKCS#12 loading, key checks and signed client assertions, over freshly generated certificates.

use super::*;
use jsonwebtoken::{DecodingKey, Validation};
use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
use pkcs8::der::pem::LineEnding;

/// A fresh self-signed RSA certificate: (certificate PEM, certificate DER, PKCS#8 key DER,
/// public key as PKCS#1 `RSAPublicKey` DER).
fn rsa_certificate() -> (String, Vec<u8>, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let params = rcgen::CertificateParams::new(vec!["scoregate-test".to_owned()]).expect("params");
    let certificate = params.self_signed(&key).expect("certificate");
    (
        certificate.pem(),
        certificate.der().to_vec(),
        key.serialize_der(),
        key.public_key_raw().to_vec(),
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    pkcs8::der::pem::encode_string(label, LineEnding::LF, der).expect("PEM")
}

fn pkcs1_of(pkcs8_der: &[u8]) -> Vec<u8> {
    let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8_der).expect("PKCS#8");
    info.private_key.as_bytes().to_vec()
}

fn pkcs12(cert_der: &[u8], key_der: &[u8], password: &str) -> Vec<u8> {
    let chain = PrivateKeyChain::new(
        b"key-1".as_slice(),
        p12_keystore::PrivateKey::from_der(key_der).expect("key"),
        [p12_keystore::Certificate::from_der(cert_der).expect("cert")],
    );
    let mut store = KeyStore::new();
    store.add_entry("scoregate", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().expect("PKCS#12")
}

#[derive(serde::Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    sub: String,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// Signs an assertion and checks header, claims and signature against the public key.
fn assert_signs_valid_assertions(certificate: &Certificate, cert_der: &[u8], public: &[u8]) {
    let audience = token_endpoint(
        &Url::parse("https://login.microsoftonline.com").expect("url"),
        "8f2c1a3e-0000-4000-8000-000000000001",
    )
    .expect("endpoint");
    assert_eq!(
        audience.as_str(),
        "https://login.microsoftonline.com/8f2c1a3e-0000-4000-8000-000000000001/oauth2/v2.0/token"
    );
    let client_id = "11111111-2222-4333-8444-555555555555";
    let jwt = certificate
        .client_assertion(audience.as_str(), client_id)
        .expect("signed");

    let header = jsonwebtoken::decode_header(&jwt).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    let sha256 = digest::digest(&digest::SHA256, cert_der);
    assert_eq!(header.x5t, Some(URL_SAFE_NO_PAD.encode(sha1.as_ref())));
    assert_eq!(
        header.x5t_s256,
        Some(URL_SAFE_NO_PAD.encode(sha256.as_ref()))
    );

    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience.as_str()]);
    validation.set_issuer(&[client_id]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let data =
        jsonwebtoken::decode::<Claims>(&jwt, &DecodingKey::from_rsa_der(public), &validation)
            .expect("signature and claims verify");
    let claims = data.claims;
    assert_eq!(claims.aud, audience.as_str());
    assert_eq!(
        (claims.iss.as_str(), claims.sub.as_str()),
        (client_id, client_id)
    );
    assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(claims.exp - claims.iat, 600);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((claims.iat - now).abs() < 60);

    let again = certificate
        .client_assertion(audience.as_str(), client_id)
        .expect("signed");
    assert_ne!(jwt, again, "every assertion has its own jti");
}

fn assert_redacted(debug: &str, key_der: &[u8]) {
    let pkcs1 = pkcs1_of(key_der);
    for secret in [
        URL_SAFE_NO_PAD.encode(key_der),
        base64::engine::general_purpose::STANDARD.encode(key_der),
        base64::engine::general_purpose::STANDARD.encode(&pkcs1),
    ] {
        assert!(!debug.contains(&secret[..40]), "{debug}");
    }
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[test]
fn a_pkcs8_pem_file_signs_verifiable_assertions() {
    let (cert_pem, cert_der, key_der, public) = rsa_certificate();
    let file = format!("{cert_pem}{}", pem("PRIVATE KEY", &key_der));
    let certificate = Certificate::from_bytes(file.as_bytes(), None).expect("loads");
    assert_eq!(certificate.der(), cert_der.as_slice());
    assert_eq!(certificate.thumbprint().len(), 40);
    assert!(
        certificate.subject().contains("rcgen"),
        "{}",
        certificate.subject()
    );
    assert!(certificate.not_after() > time::OffsetDateTime::now_utc().unix_timestamp());
    assert_signs_valid_assertions(&certificate, &cert_der, &public);
}

#[test]
fn a_pkcs1_pem_file_with_the_key_first_loads() {
    let (cert_pem, cert_der, key_der, public) = rsa_certificate();
    let file = format!("{}{cert_pem}", pem("RSA PRIVATE KEY", &pkcs1_of(&key_der)));
    let certificate = Certificate::from_bytes(file.as_bytes(), None).expect("loads");
    assert_signs_valid_assertions(&certificate, &cert_der, &public);
}

#[test]
fn the_certificate_matching_the_key_is_chosen_from_a_chain() {
    let (other_pem, ..) = rsa_certificate();
    let (cert_pem, cert_der, key_der, public) = rsa_certificate();
    let file = format!("{other_pem}{cert_pem}{}", pem("PRIVATE KEY", &key_der));
    let certificate = Certificate::from_bytes(file.as_bytes(), None).expect("loads");
    assert_eq!(certificate.der(), cert_der.as_slice());
    assert_signs_valid_assertions(&certificate, &cert_der, &public);
}

#[test]
fn pkcs12_files_load_with_and_without_password() {
    let (_, cert_der, key_der, public) = rsa_certificate();
    let protected = pkcs12(&cert_der, &key_der, "correct horse");
    let password = SecretString::from("correct horse");
    let certificate = Certificate::from_bytes(&protected, Some(&password)).expect("loads");
    assert_signs_valid_assertions(&certificate, &cert_der, &public);

    let open = pkcs12(&cert_der, &key_der, "");
    let certificate = Certificate::from_bytes(&open, None).expect("loads");
    assert_signs_valid_assertions(&certificate, &cert_der, &public);
}

#[test]
fn a_wrong_or_missing_pkcs12_password_is_a_clear_error() {
    let (_, cert_der, key_der, _) = rsa_certificate();
    let protected = pkcs12(&cert_der, &key_der, "correct horse");
    let wrong = SecretString::from("battery staple");
    for password in [Some(&wrong), None] {
        let error = Certificate::from_bytes(&protected, password).expect_err("refused");
        assert!(matches!(error, CertificateError::WrongPassword), "{error}");
        assert!(error.to_string().contains("password"), "{error}");
        assert!(!error.to_string().contains("battery"), "{error}");
    }
}

#[test]
fn files_are_read_from_disk_and_missing_files_are_reported() {
    let (cert_pem, _, key_der, _) = rsa_certificate();
    let dir = std::env::temp_dir().join(format!("scoregate-cred-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("tenant.pem");
    std::fs::write(&path, format!("{cert_pem}{}", pem("PRIVATE KEY", &key_der))).expect("write");
    assert!(Certificate::from_file(&path, None).is_ok());
    let missing = Certificate::from_file(&dir.join("nope.pfx"), None).expect_err("missing");
    assert!(matches!(missing, CertificateError::Read(_)), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn encrypted_pkcs8_pem_keys_need_their_password() {
    let (cert_pem, cert_der, key_der, public) = rsa_certificate();
    let info = pkcs8::PrivateKeyInfoRef::try_from(key_der.as_slice()).expect("PKCS#8");
    // PBKDF2-SHA256 + AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes.
    let params =
        pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(2048, &[7; 16], [9; 16])
            .expect("parameters");
    let encrypted = info
        .encrypt_with_params(params, b"s3cret")
        .expect("encrypts");
    let file = format!(
        "{cert_pem}{}",
        pem("ENCRYPTED PRIVATE KEY", encrypted.as_bytes())
    );
    let password = SecretString::from("s3cret");
    let certificate = Certificate::from_bytes(file.as_bytes(), Some(&password)).expect("decrypts");
    assert_signs_valid_assertions(&certificate, &cert_der, &public);

    let error = Certificate::from_bytes(file.as_bytes(), None).expect_err("needs a password");
    assert!(error.to_string().contains("password"), "{error}");
    let wrong = SecretString::from("nope");
    let error = Certificate::from_bytes(file.as_bytes(), Some(&wrong)).expect_err("wrong");
    assert!(error.to_string().contains("wrong password"), "{error}");
}

#[test]
fn ec_certificates_are_refused_because_entra_wants_rsa() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    let certificate = rcgen::CertificateParams::new(vec!["ec".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let file = format!("{}{}", certificate.pem(), key.serialize_pem());
    let error = Certificate::from_bytes(file.as_bytes(), None).expect_err("refused");
    assert!(matches!(error, CertificateError::NotRsa { .. }), "{error}");
    assert!(error.to_string().contains("only RSA"), "{error}");
    assert!(error.to_string().contains("EC"), "{error}");
}

#[test]
fn incomplete_or_mismatched_files_are_refused_with_a_reason() {
    let (cert_pem, cert_der, key_der, _) = rsa_certificate();
    let (_, _, other_key, _) = rsa_certificate();
    let cases = [
        (cert_pem.clone().into_bytes(), "no private key"),
        (pem("PRIVATE KEY", &key_der).into_bytes(), "no certificate"),
        (
            format!("{cert_pem}{}", pem("PRIVATE KEY", &other_key)).into_bytes(),
            "does not belong",
        ),
        (cert_der.clone(), "DER certificate without its private key"),
        (b"hello".to_vec(), "neither PEM nor PKCS#12"),
        (
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_vec(),
            "malformed",
        ),
    ];
    for (bytes, expected) in cases {
        let error = Certificate::from_bytes(&bytes, None).expect_err(expected);
        assert!(error.to_string().contains(expected), "{error} / {expected}");
    }
}

#[test]
fn debug_output_shows_no_key_material() {
    let (cert_pem, _, key_der, _) = rsa_certificate();
    let file = format!("{cert_pem}{}", pem("PRIVATE KEY", &key_der));
    let certificate = Arc::new(Certificate::from_bytes(file.as_bytes(), None).expect("loads"));
    let debug = format!("{certificate:?}");
    assert_redacted(&debug, &key_der);
    assert!(debug.contains(certificate.thumbprint()), "{debug}");
    let credential = format!("{:?}", Credential::Certificate(certificate));
    assert_redacted(&credential, &key_der);
    let secret = format!(
        "{:?}",
        Credential::Secret(SecretString::from("hunter2-secret"))
    );
    assert!(!secret.contains("hunter2"), "{secret}");
}
