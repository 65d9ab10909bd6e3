//! Emulator tests: the emulator on port 0 driven over real HTTPS by a client that trusts only
//! its CA. Each submodule covers one behaviour; this file holds their shared helpers.

mod assertions;
mod azure;
mod config;
mod controls;
mod counters;
mod determinism;
mod faults;
mod flow;
mod graph;
mod quota;
mod robustness;
mod sources;
mod tokens;

use scoregate::emulator::{EmulatedTenant, Emulator, EmulatorOptions};
use scoregate::wire::DEFENDER_SCOPE;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::time::Duration;

/// A running emulator and a client that trusts its CA only.
pub struct Harness {
    /// The emulator.
    pub emu: Emulator,
    /// HTTPS client trusting only the emulator's CA.
    pub client: reqwest::Client,
}

/// A reqwest client that trusts only `emu`'s CA (with an optional timeout).
pub fn client_for(emu: &Emulator, timeout: Option<Duration>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(emu.ca_cert_pem().as_bytes()).expect("a PEM CA");
    let mut builder = reqwest::Client::builder().tls_certs_only([ca]);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().expect("a client")
}

/// Starts an emulator with `options` (port 0) and a client for it.
pub async fn start(options: EmulatorOptions) -> Harness {
    let emu = crate::helpers::start_emulator(options).await;
    let client = client_for(&emu, Some(Duration::from_secs(20)));
    Harness { emu, client }
}

/// Starts a healthy emulator with `tenants` tenants and seed 7.
pub async fn start_healthy(tenants: usize) -> Harness {
    start(EmulatorOptions {
        tenants,
        seed: 7,
        ..EmulatorOptions::default()
    })
    .await
}

/// An answer: status, headers and body text.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("a body");
    Answer {
        status,
        headers,
        body,
    }
}

impl Harness {
    /// A tenant by slug.
    pub fn tenant(&self, slug: &str) -> EmulatedTenant {
        self.emu.tenant(slug).expect("a known tenant")
    }

    /// POSTs `form` to the token endpoint of `tenant_path` (a tenant id or domain).
    pub async fn token_request(&self, tenant_path: &str, form: &[(&str, &str)]) -> Answer {
        let url = format!("{}/{tenant_path}/oauth2/v2.0/token", self.emu.base_url());
        let response = self
            .client
            .post(url)
            .form(form)
            .send()
            .await
            .expect("the emulator answers");
        answer(response).await
    }

    /// The token request a secret tenant's client makes.
    pub async fn secret_token_request(&self, tenant: &EmulatedTenant) -> Answer {
        self.scoped_token_request(tenant, DEFENDER_SCOPE).await
    }

    /// The token request a secret tenant's client makes for `scope`.
    pub async fn scoped_token_request(&self, tenant: &EmulatedTenant, scope: &str) -> Answer {
        let secret = secret_of(tenant);
        let client_id = tenant.client_id.to_string();
        self.token_request(
            &tenant.tenant_id.to_string(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("scope", scope),
            ],
        )
        .await
    }

    /// An access token for a secret (or shared) tenant.
    pub async fn access_token(&self, slug: &str) -> String {
        let answer = self.secret_token_request(&self.tenant(slug)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// A Graph access token (scope `https://graph.microsoft.com/.default`) for a secret tenant.
    pub async fn graph_token(&self, slug: &str) -> String {
        let answer = self
            .scoped_token_request(&self.tenant(slug), scoregate::wire::GRAPH_SCOPE)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// `GET /api/exposureScore` with `Authorization: Bearer {token}`.
    pub async fn exposure(&self, token: &str) -> Answer {
        let request = self.client.get(self.emu.exposure_url()).bearer_auth(token);
        self.send(request).await
    }

    /// `GET /v1.0/security/secureScores{query}` with `Authorization: Bearer {token}`.
    pub async fn secure_scores(&self, token: &str, query: &str) -> Answer {
        let url = format!("{}{query}", self.emu.secure_scores_url());
        self.send(self.client.get(url).bearer_auth(token)).await
    }

    /// `GET /v1.0/security/secureScoreControlProfiles{query}` with `Authorization: Bearer {token}`.
    pub async fn control_profiles(&self, token: &str, query: &str) -> Answer {
        let url = format!("{}{query}", self.emu.control_profiles_url());
        self.send(self.client.get(url).bearer_auth(token)).await
    }

    /// `GET /api/configurationScore` with `Authorization: Bearer {token}`.
    pub async fn score(&self, token: &str) -> Answer {
        self.get_score(Some(&format!("Bearer {token}"))).await
    }

    /// `GET /api/configurationScore` with the given `Authorization` header, if any.
    pub async fn get_score(&self, authorization: Option<&str>) -> Answer {
        let mut request = self.client.get(self.emu.score_url());
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        answer(request.send().await.expect("the emulator answers")).await
    }

    /// Any request to the emulator.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        answer(request.send().await.expect("the emulator answers")).await
    }
}

/// The client secret of a secret or shared tenant.
pub fn secret_of(tenant: &EmulatedTenant) -> String {
    tenant
        .credential
        .secret()
        .expect("a secret tenant")
        .expose_secret()
        .to_owned()
}

/// Asserts an Entra error: status, OAuth error, AADSTS code, and the shape's ids.
pub fn assert_entra_error(answer: &Answer, status: u16, error: &str, code: i64) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], error, "{}", answer.body);
    assert_eq!(
        body["error_codes"],
        serde_json::json!([code]),
        "{}",
        answer.body
    );
    let description = body["error_description"].as_str().expect("a description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for id in ["trace_id", "correlation_id"] {
        let value = body[id].as_str().expect("an id");
        assert!(uuid::Uuid::parse_str(value).is_ok(), "{id}: {value}");
    }
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
}

/// Asserts a Defender error: status, code, and a correlation id (UUID) in `target`.
pub fn assert_defender_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"]["code"], code, "{}", answer.body);
    assert!(body["error"]["message"].is_string(), "{}", answer.body);
    let target = body["error"]["target"].as_str().expect("a target");
    assert!(uuid::Uuid::parse_str(target).is_ok(), "{target}");
}

/// Asserts a Graph error: status, code, and `innerError` with a `request-id` (UUID, also in the
/// `request-id` header) and a `date`.
pub fn assert_graph_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"]["code"], code, "{}", answer.body);
    assert!(body["error"]["message"].is_string(), "{}", answer.body);
    let inner = &body["error"]["innerError"];
    let request_id = inner["request-id"].as_str().expect("a request-id");
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id}");
    assert_eq!(answer.header("request-id").as_deref(), Some(request_id));
    assert!(inner["client-request-id"].is_string(), "{}", answer.body);
    let date = inner["date"].as_str().expect("a date");
    assert_eq!(date.len(), 19, "{date}");
}

/// Polls `condition` on the emulator's counters every 20 ms for up to 5 s.
pub async fn wait_for_stats(
    emu: &Emulator,
    condition: impl Fn(&scoregate::emulator::StatsSnapshot) -> bool,
) -> scoregate::emulator::StatsSnapshot {
    for _ in 0..250 {
        let stats = emu.stats();
        if condition(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never met; last counters: {:?}", emu.stats());
}
