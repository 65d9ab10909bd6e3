//! The path the gateway takes: azure_identity credentials against the emulator as a custom
//! cloud, over a reqwest transport that trusts the emulator's CA.

use super::{client_for, secret_of, start, Harness};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use scoregate::emulator::{CertificateCredential, EmulatorOptions};
use scoregate::wire::DEFENDER_SCOPE;
use secrecy::ExposeSecret;
use std::sync::Arc;

/// Client options pointing azure_identity at the emulator.
fn client_options(app: &Harness) -> ClientOptions {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = app.emu.base_url();
    let cloud: CloudConfiguration = custom.into();
    ClientOptions {
        cloud: Some(Arc::new(cloud)),
        transport: Some(Transport::new(Arc::new(client_for(&app.emu, None)))),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn azure_identity_client_secret_credential_gets_a_token_that_reads_the_score() {
    let app = start(EmulatorOptions {
        tenants: 2,
        ..EmulatorOptions::default()
    })
    .await;
    let contoso = app.tenant("contoso");
    let credential = ClientSecretCredential::new(
        &contoso.tenant_id.to_string(),
        contoso.client_id.to_string(),
        Secret::new(secret_of(&contoso)),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&app),
        }),
    )
    .expect("a credential");

    let first = credential
        .get_token(&[DEFENDER_SCOPE], None)
        .await
        .expect("a token");
    let second = credential
        .get_token(&[DEFENDER_SCOPE], None)
        .await
        .expect("a cached token");
    assert_eq!(first.token.secret(), second.token.secret());
    let lifetime = first.expires_on - time::OffsetDateTime::now_utc();
    assert!(lifetime > time::Duration::seconds(3_500), "{lifetime}");

    let answer = app.score(first.token.secret()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        counters.token_requests, 1,
        "the credential caches the token"
    );
    assert_eq!((counters.tokens_issued, counters.score_calls), (1, 1));
}

#[tokio::test]
async fn azure_identity_reports_entras_error_code_for_a_wrong_secret() {
    let app = start(EmulatorOptions {
        tenants: 1,
        ..EmulatorOptions::default()
    })
    .await;
    let contoso = app.tenant("contoso");
    let credential = ClientSecretCredential::new(
        &contoso.tenant_id.to_string(),
        contoso.client_id.to_string(),
        Secret::new("abc8Q~not-the-secret".to_owned()),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&app),
        }),
    )
    .expect("a credential");
    let error = credential
        .get_token(&[DEFENDER_SCOPE], None)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("AADSTS7000215"), "{error}");
}

/// Signs a fresh assertion for every token request, as a certificate client would.
#[derive(Debug)]
struct SignedAssertion {
    certificate: CertificateCredential,
    client_id: String,
    audience: String,
}

#[async_trait::async_trait]
impl ClientAssertion for SignedAssertion {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(self.certificate.x5t.clone());
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "exp": now + 600,
        });
        let key =
            EncodingKey::from_rsa_pem(self.certificate.private_key_pem.expose_secret().as_bytes())
                .map_err(|error| {
                    azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        error.to_string(),
                    )
                })?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(|error| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                error.to_string(),
            )
        })
    }
}

#[tokio::test]
async fn azure_identity_client_assertion_credential_gets_a_token_for_a_certificate_tenant() {
    let app = start(EmulatorOptions {
        tenants: 2,
        credentials: vec!["certificate=fabrikam".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    let fabrikam = app.tenant("fabrikam");
    let assertion = SignedAssertion {
        certificate: fabrikam
            .credential
            .certificate()
            .expect("a certificate")
            .clone(),
        client_id: fabrikam.client_id.to_string(),
        audience: app.emu.token_url(fabrikam.tenant_id),
    };
    let credential = ClientAssertionCredential::new(
        fabrikam.tenant_id.to_string(),
        fabrikam.client_id.to_string(),
        assertion,
        Some(ClientAssertionCredentialOptions {
            client_options: client_options(&app),
        }),
    )
    .expect("a credential");
    let token = credential
        .get_token(&[DEFENDER_SCOPE], None)
        .await
        .expect("a token");
    let answer = app.score(token.token.secret()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let counters = app.emu.stats().tenant("fabrikam");
    assert_eq!((counters.tokens_issued, counters.responses_2xx), (1, 1));
}
