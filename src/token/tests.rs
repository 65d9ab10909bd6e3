//! Unit tests of the token source against a scripted token endpoint (no network): caching,
//! sharing, renewal and reload, both credential kinds, the classification of Entra's answers
//! and the redaction of what callers see. The emulator-backed tests live in `tests/api/`.

use super::entra::{first_sentence, redact, MAX_DETAIL_CHARS};
use super::*;
use crate::credential::{Certificate, Credential};
use crate::policy::testing::{registration, DEFENDER_LIMITS};
use azure_core::error::ErrorKind;
use azure_core::http::headers::Headers;
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, StatusCode};
use base64::Engine as _;
use parking_lot::Mutex;
use secrecy::SecretString;
use std::collections::{HashMap, VecDeque};

const TENANT_GUID: &str = "8f2c1a3e-0000-4000-8000-000000000001";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "super-secret-value-123";

/// A scripted token endpoint: answers in order, records what it was sent.
#[derive(Debug, Default)]
struct ScriptedEntra {
    answers: Mutex<VecDeque<azure_core::Result<(u16, String)>>>,
    requests: Mutex<Vec<(String, String)>>,
}

impl ScriptedEntra {
    fn answering(answers: Vec<azure_core::Result<(u16, String)>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            requests: Mutex::default(),
        })
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().clone()
    }
}

#[async_trait::async_trait]
impl HttpClient for ScriptedEntra {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Body::SeekableStream(_) => String::new(),
        };
        self.requests.lock().push((request.url().to_string(), body));
        let answer = self
            .answers
            .lock()
            .pop_front()
            .unwrap_or_else(|| Ok((500, "{}".into())));
        let (status, body) = answer?;
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::from(status),
            Headers::new(),
            body.into_bytes(),
        ))
    }
}

fn token_body(token: &str) -> azure_core::Result<(u16, String)> {
    token_body_expiring_in(token, 3599)
}

fn token_body_expiring_in(token: &str, seconds: u32) -> azure_core::Result<(u16, String)> {
    Ok((
        200,
        format!(
            r#"{{"token_type":"Bearer","expires_in":{seconds},"ext_expires_in":{seconds},"access_token":"{token}"}}"#
        ),
    ))
}

fn entra_error(status: u16, code: u32, description: &str) -> azure_core::Result<(u16, String)> {
    Ok((
        status,
        serde_json::json!({
            "error": "invalid_client",
            "error_description": description,
            "error_codes": [code],
            "trace_id": "t", "correlation_id": "c"
        })
        .to_string(),
    ))
}

/// The shared test registration, with this module's ids and `credential`.
fn tenant(id: &str, credential: Credential) -> Tenant {
    Tenant {
        tenant_id: TENANT_GUID.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        credential,
        ..registration(id, DEFENDER_LIMITS)
    }
}

fn secret() -> Credential {
    Credential::Secret(SecretString::from(SECRET))
}

fn secret_tenant(id: &str) -> Arc<Tenant> {
    Arc::new(tenant(id, secret()))
}

fn source(entra: &Arc<ScriptedEntra>) -> TokenSource {
    TokenSource::with_transport(Transport::new(entra.clone()))
}

fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn a_secret_credential_posts_client_credentials_and_caches_the_token() {
    let entra = ScriptedEntra::answering(vec![token_body("token-1")]);
    let tokens = source(&entra);
    let contoso = secret_tenant("contoso");

    let token = tokens.token(&contoso).await.expect("token");
    assert_eq!(token.secret(), "token-1");
    assert!(token.expires_on() > time::OffsetDateTime::now_utc());
    let again = tokens.clone().token(&contoso).await.expect("cached token");
    assert_eq!(again.secret(), "token-1");

    let requests = entra.requests();
    assert_eq!(requests.len(), 1, "the second token came from the cache");
    let (url, body) = &requests[0];
    assert_eq!(
        url,
        &format!("https://login.example.test/{TENANT_GUID}/oauth2/v2.0/token")
    );
    let form = form(body);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], crate::wire::DEFENDER_SCOPE);
}

#[tokio::test]
async fn concurrent_first_callers_share_one_token_request() {
    let entra = ScriptedEntra::answering(vec![token_body("shared")]);
    let tokens = source(&entra);
    let contoso = secret_tenant("contoso");
    let calls = (0..8).map(|_| tokens.token(&contoso));
    for token in futures::future::join_all(calls).await {
        assert_eq!(token.expect("token").secret(), "shared");
    }
    assert_eq!(entra.requests().len(), 1);
}

#[tokio::test]
async fn a_token_is_renewed_five_minutes_before_it_expires_and_each_scope_has_its_own() {
    let entra = ScriptedEntra::answering(vec![
        token_body_expiring_in("four-minutes-left", 240),
        token_body_expiring_in("an-hour-left", 3599),
        token_body("graph"),
    ]);
    let tokens = source(&entra);
    let contoso = secret_tenant("contoso");

    // Less than the five-minute margin left: used for the call that asked, never again.
    let short = tokens.token(&contoso).await.expect("token");
    assert_eq!(short.secret(), "four-minutes-left");
    let renewed = tokens.token(&contoso).await.expect("token");
    assert_eq!(renewed.secret(), "an-hour-left");
    assert_eq!(
        tokens.token(&contoso).await.expect("token").secret(),
        "an-hour-left",
        "a token with an hour left is kept"
    );

    // Graph's scope is another token of the same registration.
    let graph = tokens
        .token_for(&contoso, &Arc::from(crate::wire::GRAPH_SCOPE))
        .await
        .expect("graph token");
    assert_eq!(graph.secret(), "graph");
    let requests = entra.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(form(&requests[2].1)["scope"], crate::wire::GRAPH_SCOPE);
}

#[tokio::test]
async fn renew_and_retain_make_the_next_call_ask_entra_again() {
    let entra = ScriptedEntra::answering(vec![
        token_body("first"),
        token_body("renewed"),
        token_body("reloaded"),
        token_body("changed"),
    ]);
    let tokens = source(&entra);
    let registry = Registry::new(vec![
        tenant("contoso", secret()),
        tenant("fabrikam", secret()),
    ]);
    let contoso = registry.get("contoso").expect("contoso").clone();

    assert_eq!(
        tokens.token(&contoso).await.expect("token").secret(),
        "first"
    );
    tokens.renew(&contoso.id);
    assert_eq!(
        tokens.token(&contoso).await.expect("token").secret(),
        "renewed"
    );

    // A reload that keeps the registration keeps its credential and cached token.
    tokens.retain(&registry);
    assert_eq!(
        tokens.token(&contoso).await.expect("token").secret(),
        "renewed"
    );
    assert_eq!(entra.requests().len(), 2);

    // A reload that rebuilt it (another `Arc`) drops it.
    let reloaded = Registry::new(vec![tenant("contoso", secret())]);
    tokens.retain(&reloaded);
    assert!(!format!("{tokens:?}").contains("contoso"), "{tokens:?}");
    let contoso = reloaded.get("contoso").expect("contoso").clone();
    assert_eq!(
        tokens.token(&contoso).await.expect("token").secret(),
        "reloaded"
    );

    // A changed registration gets a new credential even before `retain` runs.
    let changed = Arc::new(tenant("contoso", secret()));
    assert_eq!(
        tokens.token(&changed).await.expect("token").secret(),
        "changed"
    );
    assert_eq!(entra.requests().len(), 4);
}

#[tokio::test]
async fn a_certificate_credential_posts_a_signed_assertion_for_the_token_endpoint() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let cert = rcgen::CertificateParams::new(vec!["t".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let certificate = Certificate::from_bytes(pem.as_bytes(), None).expect("certificate");
    let entra = ScriptedEntra::answering(vec![token_body("cert-token")]);
    let tokens = source(&entra);
    let litware = Arc::new(tenant(
        "litware",
        Credential::Certificate(Arc::new(certificate)),
    ));

    assert_eq!(
        tokens.token(&litware).await.expect("token").secret(),
        "cert-token"
    );
    let requests = entra.requests();
    let (url, body) = &requests[0];
    let form = form(body);
    assert_eq!(
        form["client_assertion_type"],
        crate::wire::JWT_BEARER_ASSERTION_TYPE
    );
    assert!(!form.contains_key("client_secret"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[url.as_str()]);
    validation.set_issuer(&[CLIENT_ID]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &form["client_assertion"],
        &jsonwebtoken::DecodingKey::from_rsa_der(key.public_key_raw()),
        &validation,
    )
    .expect("the assertion verifies with the certificate's key")
    .claims;
    assert_eq!(claims["sub"], CLIENT_ID);
    let header = jsonwebtoken::decode_header(&form["client_assertion"]).expect("header");
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der());
    assert_eq!(
        header.x5t,
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1.as_ref()))
    );
}

#[tokio::test]
async fn entra_refusals_are_rejected_with_codes_and_a_short_detail() {
    let description = "AADSTS7000215: Invalid client secret provided. Ensure the secret \
        being sent in the request is the client secret value.\r\nTrace ID: abc\r\n\
        Correlation ID: def\r\nTimestamp: 2026-11-29 10:00:00Z";
    let entra = ScriptedEntra::answering(vec![entra_error(401, 7000215, description)]);
    let error = source(&entra)
        .token(&secret_tenant("contoso"))
        .await
        .expect_err("refused");
    match &error {
        TokenError::Rejected {
            status,
            codes,
            detail,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(codes, "AADSTS7000215");
            assert_eq!(detail, "AADSTS7000215: Invalid client secret provided.");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let shown = error.to_string();
    assert!(
        !shown.contains(SECRET) && !shown.contains("Trace ID"),
        "{shown}"
    );
    assert!(!shown.contains("https://"), "{shown}");
}

#[tokio::test]
async fn a_refusal_without_codes_falls_back_to_the_oauth_error() {
    let entra = ScriptedEntra::answering(vec![Ok((
        400,
        r#"{"error":"invalid_request","error_description":"Bad scope."}"#.into(),
    ))]);
    let error = source(&entra)
        .token(&secret_tenant("contoso"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, TokenError::Rejected { status: 400, codes, .. } if codes == "invalid_request"),
        "{error:?}"
    );
}

#[tokio::test]
async fn entra_outages_throttling_and_garbage_are_unavailable() {
    let cases = vec![
        entra_error(
            503,
            90033,
            "AADSTS90033: A transient error has occurred. Try again.",
        ),
        entra_error(
            429,
            50196,
            "AADSTS50196: The server terminated an operation.",
        ),
        Ok((502, "<html>Bad gateway</html>".into())),
        Ok((200, "not json".into())),
        Err(azure_core::Error::with_error(
            ErrorKind::Connection,
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
            "failed to execute `reqwest` request",
        )),
    ];
    let expected = [
        "answered 503: AADSTS90033: A transient error has occurred.",
        "answered 429",
        "the token endpoint answered 502",
        "not a token response",
        "cannot connect to the token endpoint: connection refused",
    ];
    for (answer, expected) in cases.into_iter().zip(expected) {
        let entra = ScriptedEntra::answering(vec![answer]);
        let error = source(&entra)
            .token(&secret_tenant("contoso"))
            .await
            .expect_err("fails");
        assert!(
            matches!(&error, TokenError::Unavailable { detail } if detail.contains(expected)),
            "{error:?} / {expected}"
        );
    }
}

#[tokio::test]
async fn a_credential_that_cannot_be_built_is_invalid_and_sends_nothing() {
    let entra = ScriptedEntra::answering(Vec::new());
    let mut bad = tenant("contoso", secret());
    bad.tenant_id = "not a tenant/../id".into();
    let error = source(&entra)
        .token(&Arc::new(bad))
        .await
        .expect_err("invalid");
    assert!(matches!(error, TokenError::Invalid { .. }), "{error:?}");
    assert!(!error.to_string().contains("troubleshoot"), "{error}");
    assert!(entra.requests().is_empty());
}

#[tokio::test]
async fn tokens_and_sources_never_show_secrets_in_debug() {
    let entra = ScriptedEntra::answering(vec![token_body("eyJ.secret-token.sig")]);
    let tokens = source(&entra);
    let token = tokens
        .token(&secret_tenant("contoso"))
        .await
        .expect("token");
    for shown in [format!("{token:?}"), format!("{tokens:?}")] {
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

#[tokio::test]
async fn refusals_naming_the_app_or_the_tenant_by_id_keep_the_code_and_drop_the_ids() {
    let cases = [
        (
            7000222,
            format!("AADSTS7000222: The provided client secret keys for app '{CLIENT_ID}' are expired. Visit the Azure portal. Trace ID: 0a1b2c3d-0000-4000-8000-000000000001 Correlation ID: 0a1b2c3d-0000-4000-8000-000000000002 Timestamp: 2026-11-29 10:00:00Z"),
            "AADSTS7000222: The provided client secret keys for app '(id removed)' are expired.",
        ),
        (
            700016,
            format!("AADSTS700016: Application with identifier '{}' was not found in the directory '{}'. This can happen.\r\nTrace ID: x", CLIENT_ID.to_uppercase(), TENANT_GUID),
            "AADSTS700016: Application with identifier '(id removed)' was not found in the directory '(id removed)'.",
        ),
    ];
    for (code, description, expected) in cases {
        let entra = ScriptedEntra::answering(vec![entra_error(401, code, &description)]);
        let error = source(&entra)
            .token(&secret_tenant("contoso"))
            .await
            .expect_err("refused");
        match &error {
            TokenError::Rejected { detail, codes, .. } => {
                assert_eq!(detail, expected);
                assert_eq!(codes, &format!("AADSTS{code}"));
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
}

#[test]
fn redaction_cuts_the_trailing_ids_and_replaces_every_guid() {
    assert_eq!(
        redact("AADSTS1: a 8F2C1A3E-0000-4000-8000-000000000001 b.\r\nTrace ID: t\r\nCorrelation ID: c"),
        "AADSTS1: a (id removed) b.\r\n"
    );
    assert_eq!(redact("Timestamp: 2026 then"), "");
    // Not a GUID: too short, wrong groups, or part of a longer hex run.
    for kept in [
        "8f2c1a3e-0000-4000-8000-00000000000",
        "8f2c1a3e00000-4000-8000-000000000001",
        "a8f2c1a3e-0000-4000-8000-000000000001",
        "8f2c1a3e-0000-4000-8000-0000000000012",
    ] {
        assert_eq!(redact(kept), kept);
    }
    assert_eq!(
        redact("é11111111-2222-4333-8444-555555555555é"),
        "é(id removed)é"
    );
}

#[test]
fn first_sentences_are_short_single_lines() {
    assert_eq!(first_sentence("One. Two."), "One.");
    assert_eq!(first_sentence("  no period  "), "no period");
    assert_eq!(first_sentence("line one\nline two"), "line one");
    assert_eq!(first_sentence("v1.0 is fine. Next"), "v1.0 is fine.");
    let long = "x".repeat(500);
    assert_eq!(first_sentence(&long).chars().count(), MAX_DETAIL_CHARS + 1);
}
