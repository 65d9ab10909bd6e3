//! Callers with Entra ID access tokens: the emulator's MSP tenant issues them (v2 and v1 forms),
//! the gateway checks them against the emulator's OpenID configuration and key set, over HTTPS,
//! and maps their roles to the scopes of the written `[auth.entra]` section (operators, readers,
//! gold). The helpers here are shared by `entra_refusals` and `entra_keys`.

use crate::helpers::{captured_logs, emulator_options, spawn_app_with_config, TestApp};
use scoregate::emulator::{Emulator, EmulatorOptions};
use std::collections::BTreeSet;

/// Six tenants (contoso and litware gold) behind a gateway with authentication on: the written
/// `[auth.entra]` section, plus `extra_toml`.
pub async fn spawn_entra(options: EmulatorOptions, extra_toml: &str) -> TestApp {
    spawn_app_with_config(options, &[("SCOREGATE__AUTH__ENABLED", "true")], extra_toml).await
}

/// The usual six tenants.
pub fn six_tenants() -> EmulatorOptions {
    emulator_options(6, vec![])
}

/// A client that trusts the emulator's CA.
pub fn emulator_client(app: &TestApp) -> reqwest::Client {
    client_of(&app.emulator)
}

/// A client that trusts `emulator`'s CA.
pub fn client_of(emulator: &Emulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(emulator.ca_cert_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

/// The emulator's caller app `name` (`GET /_emulator/callers`).
pub async fn caller(app: &TestApp, name: &str) -> serde_json::Value {
    caller_of(&app.emulator, name).await
}

/// `emulator`'s caller app `name`.
async fn caller_of(emulator: &Emulator, name: &str) -> serde_json::Value {
    let callers: Vec<serde_json::Value> = client_of(emulator)
        .get(format!("{}/_emulator/callers", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    callers
        .into_iter()
        .find(|caller| caller["name"] == name)
        .expect("the caller app exists")
}

/// A token of caller app `name` from the MSP tenant's token endpoint (`version` 1 or 2).
pub async fn token(app: &TestApp, name: &str, version: u8) -> String {
    token_of(&app.emulator, name, version).await
}

/// A token of `emulator`'s caller app `name`.
pub async fn token_of(emulator: &Emulator, name: &str, version: u8) -> String {
    let caller = caller_of(emulator, name).await;
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        (
            "client_id",
            caller["client_id"].as_str().unwrap().to_owned(),
        ),
        (
            "client_secret",
            caller["client_secret"].as_str().unwrap().to_owned(),
        ),
        ("scope", scoregate::emulator::SCOREGATE_SCOPE.to_owned()),
    ];
    if version == 1 {
        form.push(("token_version", "1".to_owned()));
    }
    let response = client_of(emulator)
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emulator.base_url(),
            scoregate::emulator::MSP_TENANT
        ))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A token of `name` signed by the emulator's current key with claims changed (`crafted` is
/// `{"version": 1|2, "claims": {…}}`; a `null` claim is removed).
pub async fn crafted(app: &TestApp, name: &str, crafted: serde_json::Value) -> String {
    let response = emulator_client(app)
        .post(format!(
            "{}/_emulator/callers/{name}/token",
            app.emulator.base_url()
        ))
        .json(&crafted)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The emulator's key counters (`GET /_emulator/keys`).
pub async fn keys(app: &TestApp) -> serde_json::Value {
    emulator_client(app)
        .get(format!("{}/_emulator/keys", app.emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// GET `path` on the gateway with `Authorization: Bearer <token>`.
pub async fn get_as(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Status and problem code of GET `path` with `token`.
pub async fn status_and_code(app: &TestApp, path: &str, token: &str) -> (u16, String) {
    let response = get_as(app, path, token).await;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

async fn visible(app: &TestApp, token: &str) -> BTreeSet<String> {
    let response = get_as(app, "/tenants", token).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[tokio::test]
async fn v2_and_v1_tokens_of_each_mapped_role_see_exactly_what_the_role_grants() {
    let app = spawn_entra(six_tenants(), "").await;
    let everyone = set(&[
        "adatum",
        "contoso",
        "fabrikam",
        "litware",
        "northwind",
        "tailspin",
    ]);
    for version in [2, 1] {
        let portal = token(&app, "portal", version).await;
        let ops = token(&app, "ops", version).await;
        let tagged = token(&app, "tagged", version).await;
        assert_eq!(visible(&app, &portal).await, everyone, "v{version}");
        assert_eq!(visible(&app, &ops).await, everyone, "v{version}");
        assert_eq!(
            visible(&app, &tagged).await,
            set(&["contoso", "litware"]),
            "v{version}: Scores.Read.Gold maps to tag gold"
        );

        let response = get_as(&app, "/tenants/contoso/score", &tagged).await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers().contains_key("ratelimit-remaining"));
        let (status, code) = status_and_code(&app, "/tenants/fabrikam/score", &tagged).await;
        assert_eq!((status, code.as_str()), (404, "unknown_tenant"));

        // Operator data: the Operator role only (others get the 404 of a route that is not there).
        assert_eq!(get_as(&app, "/metrics", &ops).await.status().as_u16(), 200);
        assert_eq!(
            status_and_code(&app, "/metrics", &portal).await,
            (404, "not_found".to_owned())
        );
        assert_eq!(
            status_and_code(&app, "/webhooks/deliveries", &ops).await.0,
            200,
            "an operator reads the deliveries"
        );
        assert_eq!(
            status_and_code(&app, "/webhooks/deliveries", &portal).await,
            (404, "not_found".to_owned())
        );
    }

    // The log names the mapping and the app id, never the token.
    let ops_app = caller(&app, "ops").await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ops = token(&app, "ops", 2).await;
    get_as(&app, "/tenants", &ops).await;
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("caller=operators") && line.contains(&ops_app)),
        "a request line names the mapping and the app id"
    );
    assert!(!logs.contains(&ops), "no token in the logs");
}

#[tokio::test]
async fn a_valid_token_that_maps_to_no_caller_is_403_forbidden() {
    let app = spawn_entra(six_tenants(), "").await;
    let norole = token(&app, "norole", 2).await;
    let response = get_as(&app, "/tenants", &norole).await;
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("map to no caller"),
        "{body}"
    );
    let app_id = caller(&app, "norole").await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        captured_logs().contains(&app_id),
        "the refusal names the app"
    );
}

#[tokio::test]
async fn conflicting_credentials_are_refused_with_why() {
    let (key, digest) = scoregate::auth::generate_key().unwrap();
    let keys_toml =
        format!("[[api_keys]]\nname = \"portal-key\"\nsha256 = \"{digest}\"\ntenants = [\"*\"]\n");
    let app = spawn_entra(six_tenants(), &keys_toml).await;
    let portal = token(&app, "portal", 2).await;
    let send = |authorization: Option<String>, api_key: Option<&str>| {
        let mut request = app.client.get(format!("{}/tenants", app.address));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        if let Some(value) = api_key {
            request = request.header("X-API-Key", value);
        }
        request.send()
    };
    // Each alone works: the key on either header, the token as a bearer.
    for (authorization, api_key) in [
        (Some(format!("Bearer {key}")), None),
        (None, Some(key.as_str())),
        (Some(format!("Bearer {portal}")), None),
        (Some(format!("Bearer {key}")), Some(key.as_str())),
    ] {
        let response = send(authorization, api_key).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    for (authorization, api_key, why) in [
        (
            Some(format!("Bearer {portal}")),
            Some(key.as_str()),
            "carries an access token and `X-API-Key` a key",
        ),
        (
            Some("Bearer junk".to_owned()),
            Some(key.as_str()),
            "carry different keys",
        ),
        (
            Some(format!("Basic {portal}")),
            Some(key.as_str()),
            "is not `Bearer <key>`",
        ),
        (
            Some(format!("Bearer {portal}")),
            Some(portal.as_str()),
            "carries an access token and `X-API-Key` a key",
        ),
    ] {
        let response = send(authorization, api_key).await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthenticated");
        assert!(
            body["detail"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
    }
}

#[tokio::test]
async fn each_mapped_caller_has_its_own_request_rate() {
    let options = EmulatorOptions {
        callers: vec!["limited=Scores.Limited".parse().unwrap()],
        ..six_tenants()
    };
    let limited = "[[auth.entra.callers]]\nname = \"limited\"\nrole = \"Scores.Limited\"\n\
                   tenants = [\"*\"]\nrequests_per_minute = 3\n";
    let app = spawn_entra(options, limited).await;
    let token_a = token(&app, "limited", 2).await;
    let token_b = token(&app, "limited", 1).await;
    for (index, token) in [&token_a, &token_b, &token_a].iter().enumerate() {
        let response = get_as(&app, "/tenants", token).await;
        assert_eq!(response.status().as_u16(), 200, "request {index}");
        assert_eq!(response.headers()["ratelimit-limit"], "3");
    }
    let refused = get_as(&app, "/tenants", &token_b).await;
    assert_eq!(refused.status().as_u16(), 429, "one budget per mapping");
    assert!(refused.headers().contains_key("retry-after"));
    let portal = token(&app, "portal", 2).await;
    let other = get_as(&app, "/tenants", &portal).await;
    assert_eq!(other.status().as_u16(), 200, "another caller is not slowed");
    assert_eq!(other.headers()["ratelimit-limit"], "600");
}

#[tokio::test]
async fn a_reload_swaps_the_mappings_and_keeps_the_cached_keys() {
    let app = spawn_entra(six_tenants(), "").await;
    let portal = token(&app, "portal", 2).await;
    assert_eq!(visible(&app, &portal).await.len(), 6);
    let fetched = keys(&app).await["jwks_requests"].as_u64().unwrap();

    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let narrowed = text.replacen(
        "name = \"readers\"\nrole = \"Scores.Read.All\"\ntenants = [\"*\"]",
        "name = \"readers\"\nrole = \"Scores.Read.All\"\ntenants = [\"contoso\"]",
        1,
    );
    assert_ne!(
        text, narrowed,
        "the written section has the readers mapping"
    );
    std::fs::write(&app.config_path, narrowed).unwrap();
    app.reloader.reload().await.expect("a valid configuration");

    assert_eq!(visible(&app, &portal).await, set(&["contoso"]));
    assert_eq!(
        keys(&app).await["jwks_requests"].as_u64().unwrap(),
        fetched,
        "the same issuer's keys stay cached across the reload"
    );
}

#[test]
fn the_document_offers_one_bearer_scheme_for_tokens_and_keys_and_documents_403() {
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["scheme"], "bearer");
    assert_eq!(
        bearer["bearerFormat"], "JWT",
        "Swagger UI's Authorize takes a token"
    );
    assert!(bearer["description"]
        .as_str()
        .unwrap()
        .contains("Entra ID access token"));
    let scores = &document["paths"]["/scores"]["get"]["responses"];
    assert_eq!(scores["403"]["$ref"], "#/components/responses/Forbidden");
    assert!(document["paths"]["/healthz"]["get"]["responses"]["403"].is_null());
}
