//! Certificate credentials: RS256 client assertions signed with the registered certificate's key.

use super::{assert_entra_error, start, Answer, Harness};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use scoregate::emulator::{CertificateCredential, CredentialKind, EmulatorOptions, FaultProfile};
use scoregate::wire::{DEFENDER_SCOPE, JWT_BEARER_ASSERTION_TYPE};
use secrecy::ExposeSecret;
use serde_json::json;

async fn certificate_app() -> Harness {
    start(EmulatorOptions {
        tenants: 3,
        credentials: vec!["certificate=contoso,fabrikam".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await
}

fn certificate_of(app: &Harness, slug: &str) -> CertificateCredential {
    let tenant = app.tenant(slug);
    assert_eq!(tenant.credential_kind(), CredentialKind::Certificate);
    tenant
        .credential
        .certificate()
        .expect("a certificate")
        .clone()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Signs claims with `key_of`'s private key under `header`.
fn sign(key_of: &CertificateCredential, header: &Header, claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_rsa_pem(key_of.private_key_pem.expose_secret().as_bytes())
        .expect("an RSA key");
    jsonwebtoken::encode(header, claims, &key).expect("a signed JWT")
}

fn x5t_header(certificate: &CertificateCredential) -> Header {
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(certificate.x5t.clone());
    header
}

/// The claims a well-behaved client sends for `slug`.
fn claims(app: &Harness, slug: &str, exp: i64) -> serde_json::Value {
    let tenant = app.tenant(slug);
    json!({
        "aud": app.emu.token_url(tenant.tenant_id),
        "iss": tenant.client_id.to_string(),
        "sub": tenant.client_id.to_string(),
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now() - 5,
        "exp": exp,
    })
}

async fn present(app: &Harness, slug: &str, assertion: &str) -> Answer {
    let tenant = app.tenant(slug);
    let client_id = tenant.client_id.to_string();
    app.token_request(
        &tenant.tenant_id.to_string(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("scope", DEFENDER_SCOPE),
        ],
    )
    .await
}

#[tokio::test]
async fn a_valid_certificate_assertion_gets_a_token_that_reads_the_score() {
    let app = certificate_app().await;
    let certificate = certificate_of(&app, "contoso");
    let assertion = sign(
        &certificate,
        &x5t_header(&certificate),
        &claims(&app, "contoso", now() + 600),
    );
    let answer = present(&app, "contoso", &assertion).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.score(&token).await.status, 200);

    // `x5t#S256` names the certificate too, and so does azure_identity's standard-base64 `x5t`.
    let mut s256 = Header::new(Algorithm::RS256);
    s256.x5t_s256 = Some(certificate.x5t_s256.clone());
    let assertion = sign(&certificate, &s256, &claims(&app, "contoso", now() + 600));
    assert_eq!(present(&app, "contoso", &assertion).await.status, 200);

    let sha1 = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&certificate.x5t)
        .unwrap();
    let mut standard = Header::new(Algorithm::RS256);
    standard.x5t = Some(STANDARD.encode(sha1));
    let assertion = sign(
        &certificate,
        &standard,
        &claims(&app, "contoso", now() + 600),
    );
    assert_eq!(present(&app, "contoso", &assertion).await.status, 200);

    // The v1 token URL and the tenant's domain are accepted audiences as well.
    let tenant = app.tenant("contoso");
    for aud in [
        format!("{}/{}/oauth2/token", app.emu.base_url(), tenant.tenant_id),
        format!(
            "{}/contoso.onmicrosoft.com/oauth2/v2.0/token/",
            app.emu.base_url()
        ),
    ] {
        let mut claims = claims(&app, "contoso", now() + 600);
        claims["aud"] = json!(aud);
        let assertion = sign(&certificate, &x5t_header(&certificate), &claims);
        assert_eq!(
            present(&app, "contoso", &assertion).await.status,
            200,
            "{aud}"
        );
    }
    assert_eq!(app.emu.stats().tenant("contoso").tokens_issued, 5);
}

#[tokio::test]
async fn an_assertion_signed_by_another_key_is_aadsts700027() {
    let app = certificate_app().await;
    let contoso = certificate_of(&app, "contoso");
    let fabrikam = certificate_of(&app, "fabrikam");
    // Names contoso's certificate, signed with fabrikam's key.
    let forged = sign(
        &fabrikam,
        &x5t_header(&contoso),
        &claims(&app, "contoso", now() + 600),
    );
    let answer = present(&app, "contoso", &forged).await;
    assert_entra_error(&answer, 401, "invalid_client", 700027);
    assert!(answer.body.contains("signature"), "{}", answer.body);

    // Names a certificate that is not registered on contoso's app.
    let unknown = sign(
        &fabrikam,
        &x5t_header(&fabrikam),
        &claims(&app, "contoso", now() + 600),
    );
    let answer = present(&app, "contoso", &unknown).await;
    assert_entra_error(&answer, 401, "invalid_client", 700027);
    assert!(answer.body.contains("not registered"), "{}", answer.body);
}

#[tokio::test]
async fn an_assertion_for_another_audience_is_aadsts700023() {
    let app = certificate_app().await;
    let certificate = certificate_of(&app, "contoso");
    let tenant = app.tenant("contoso");
    for aud in [
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            tenant.tenant_id
        ),
        app.emu.token_url(app.tenant("fabrikam").tenant_id),
        "https://api.securitycenter.microsoft.com".to_owned(),
    ] {
        let mut claims = claims(&app, "contoso", now() + 600);
        claims["aud"] = json!(aud);
        let assertion = sign(&certificate, &x5t_header(&certificate), &claims);
        let answer = present(&app, "contoso", &assertion).await;
        assert_entra_error(&answer, 401, "invalid_client", 700023);
    }
}

#[tokio::test]
async fn an_expired_assertion_is_aadsts700024() {
    let app = certificate_app().await;
    let certificate = certificate_of(&app, "contoso");
    let expired = sign(
        &certificate,
        &x5t_header(&certificate),
        &claims(&app, "contoso", now() - 3_600),
    );
    let answer = present(&app, "contoso", &expired).await;
    assert_entra_error(&answer, 401, "invalid_client", 700024);
}

#[tokio::test]
async fn an_assertion_issued_by_another_client_is_aadsts700021() {
    let app = certificate_app().await;
    let certificate = certificate_of(&app, "contoso");
    let mut claims = claims(&app, "contoso", now() + 600);
    claims["iss"] = json!(uuid::Uuid::new_v4().to_string());
    let assertion = sign(&certificate, &x5t_header(&certificate), &claims);
    let answer = present(&app, "contoso", &assertion).await;
    assert_entra_error(&answer, 401, "invalid_client", 700021);
}

#[tokio::test]
async fn a_malformed_assertion_is_aadsts50027_and_a_hs256_one_is_refused() {
    let app = certificate_app().await;
    let answer = present(&app, "contoso", "not.a.jwt").await;
    assert_entra_error(&answer, 400, "invalid_request", 50027);

    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&app, "contoso", now() + 600),
        &EncodingKey::from_secret(b"shared secret").unwrap(),
    )
    .unwrap();
    let answer = present(&app, "contoso", &hs256).await;
    assert_entra_error(&answer, 400, "invalid_request", 5002738);
}

#[tokio::test]
async fn revoked_and_expired_certificates_are_aadsts700027() {
    let app = certificate_app().await;
    let certificate = certificate_of(&app, "contoso");
    for fault in [FaultProfile::Revoked, FaultProfile::ExpiredSecret] {
        app.emu.set_fault("contoso", Some(fault)).unwrap();
        let assertion = sign(
            &certificate,
            &x5t_header(&certificate),
            &claims(&app, "contoso", now() + 600),
        );
        let answer = present(&app, "contoso", &assertion).await;
        assert_entra_error(&answer, 401, "invalid_client", 700027);
    }
}

#[tokio::test]
async fn a_secret_tenant_has_no_certificate_and_a_certificate_tenant_no_secret() {
    let app = certificate_app().await;
    let contoso = certificate_of(&app, "contoso");
    // northwind has a secret only: any assertion names an unknown key.
    let assertion = sign(
        &contoso,
        &x5t_header(&contoso),
        &claims(&app, "northwind", now() + 600),
    );
    let answer = present(&app, "northwind", &assertion).await;
    assert_entra_error(&answer, 401, "invalid_client", 700027);

    let tenant = app.tenant("contoso");
    let client_id = tenant.client_id.to_string();
    let answer = app
        .token_request(
            &tenant.tenant_id.to_string(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", "anything"),
                ("scope", DEFENDER_SCOPE),
            ],
        )
        .await;
    assert_entra_error(&answer, 401, "invalid_client", 7000215);
}

#[tokio::test]
async fn the_certificate_pem_holds_the_certificate_and_its_pkcs8_key() {
    let app = certificate_app().await;
    let certificate = certificate_of(&app, "contoso");
    let bundle = certificate.pem_bundle();
    let bundle = bundle.expose_secret();
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(bundle.contains("-----BEGIN PRIVATE KEY-----"));
    // The key is RSA (Entra requires it): jsonwebtoken accepts it for RS256.
    assert!(
        EncodingKey::from_rsa_pem(certificate.private_key_pem.expose_secret().as_bytes()).is_ok()
    );
}
