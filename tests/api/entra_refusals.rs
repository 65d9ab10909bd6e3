//! Entra ID tokens the gateway refuses, each with its RFC 6750 challenge and reason: expired,
//! not yet valid, another audience (Microsoft Graph's above all), another issuer, a tenant not
//! allowed, `alg: none`, HS256 keyed with the public key, a delegated token.

use crate::entra::{crafted, emulator_client, get_as, keys, six_tenants, spawn_entra, token};
use crate::helpers::TestApp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

/// The emulator's clock in Unix seconds, as its tokens' `iat` says.
async fn now(app: &TestApp) -> i64 {
    let token = token(app, "portal", 2).await;
    claims(&token)["iat"].as_i64().unwrap()
}

/// The (unverified) claims of a token.
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The header of a token.
fn header(token: &str) -> serde_json::Value {
    let encoded = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap()
}

/// Asserts a 401 `unauthenticated` with `error="invalid_token"` and `why` in both the
/// challenge's `error_description` and the problem's detail.
async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let response = get_as(app, "/tenants", token).await;
    assert_eq!(response.status().as_u16(), 401, "{why}");
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains("error=\"invalid_token\"")
            && challenge.contains(&format!("error_description=\"{why}")),
        "{challenge}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    assert!(body["detail"].as_str().unwrap().contains(why), "{body}");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway_only() {
    let app = spawn_entra(six_tenants(), "").await;
    let now = now(&app).await;
    let expired = crafted(
        &app,
        "portal",
        json!({"claims": {"iat": now - 7200, "nbf": now - 7200, "exp": now - 600}}),
    )
    .await;
    assert_refused(&app, &expired, "the token has expired").await;
    let future = crafted(
        &app,
        "portal",
        json!({"claims": {"nbf": now + 3600, "exp": now + 7200}}),
    )
    .await;
    assert_refused(&app, &future, "the token is not valid yet").await;
    // Within the default leeway of 60 s, both are accepted.
    for claims in [
        json!({"exp": now - 20}),
        json!({"nbf": now + 20, "exp": now + 3600}),
    ] {
        let token = crafted(&app, "portal", json!({ "claims": claims })).await;
        assert_eq!(
            get_as(&app, "/tenants", &token).await.status().as_u16(),
            200
        );
    }
}

#[tokio::test]
async fn tokens_for_other_audiences_issuers_or_tenants_are_refused() {
    let app = spawn_entra(six_tenants(), "").await;
    let portal = token(&app, "portal", 2).await;
    let tid = claims(&portal)["tid"].as_str().unwrap().to_owned();
    let other_tid = "0f0e0d0c-0b0a-4909-8807-060504030201";
    let base = app.emulator.base_url();
    for (claims, why) in [
        (
            json!({"aud": "api://another-api"}),
            "the token is for another audience",
        ),
        (
            json!({"aud": "00000003-0000-0000-c000-000000000000"}),
            "the token is for Microsoft Graph",
        ),
        (
            json!({"aud": "https://graph.microsoft.com"}),
            "the token is for Microsoft Graph",
        ),
        (
            json!({"aud": ["api://scoregate", "https://graph.microsoft.com"]}),
            "the token is for Microsoft Graph",
        ),
        // Microsoft's real issuer is not this gateway's (its authority is the emulator).
        (
            json!({"iss": format!("https://login.microsoftonline.com/{tid}/v2.0")}),
            "the token's issuer is not accepted",
        ),
        (
            json!({"iss": format!("{base}/{tid}/v2.0/")}),
            "the token's issuer is not accepted",
        ),
        (
            json!({"tid": other_tid, "iss": format!("{base}/{other_tid}/v2.0")}),
            "the token's tenant is not allowed",
        ),
        (
            json!({"tid": "not-a-guid"}),
            "the token's tenant is not allowed",
        ),
        (json!({"tid": null}), "the token's tenant is not allowed"),
        (json!({"exp": null}), "the token lacks a required claim"),
        (
            json!({"scp": "Scores.Read", "idtyp": "user"}),
            "delegated (user) tokens are not accepted",
        ),
    ] {
        let token = crafted(&app, "portal", json!({ "claims": claims })).await;
        assert_refused(&app, &token, why).await;
    }
    let v1 = crafted(
        &app,
        "portal",
        json!({"version": 1, "claims": {"iss": format!("https://sts.windows.net/{tid}/")}}),
    )
    .await;
    assert_refused(&app, &v1, "the token's issuer is not accepted").await;
}

#[tokio::test]
async fn alg_none_and_hs256_keyed_with_the_public_key_are_refused() {
    let app = spawn_entra(six_tenants(), "").await;
    let portal = token(&app, "portal", 2).await;
    let kid = header(&portal)["kid"].as_str().unwrap().to_owned();
    let payload = portal.split('.').nth(1).unwrap().to_owned();

    for alg in ["none", "None", "NONE"] {
        let none =
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string());
        assert_refused(
            &app,
            &format!("{none}.{payload}."),
            "the token's algorithm is not accepted",
        )
        .await;
    }

    // The classic confusion: HMAC keyed with the RSA public key a verifier holds.
    let set: serde_json::Value = emulator_client(&app)
        .get(format!(
            "{}/msp/discovery/v2.0/keys",
            app.emulator.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let modulus = set["keys"][0]["n"].as_str().unwrap().to_owned();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims(&portal),
        &jsonwebtoken::EncodingKey::from_secret(modulus.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_refused(&app, &hs256, "the token's algorithm is not accepted").await;

    // A real signature over other claims does not verify.
    let signature = portal.split('.').nth(2).unwrap();
    let other = crafted(&app, "ops", json!({})).await;
    let forged = format!(
        "{}.{}.{signature}",
        other.split('.').next().unwrap(),
        other.split('.').nth(1).unwrap()
    );
    assert_refused(&app, &forged, "the token's signature is not valid").await;
    assert_refused(
        &app,
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        "the token names no signing key",
    )
    .await;
    assert_eq!(
        keys(&app).await["openid_configuration_requests"].as_u64(),
        Some(1),
        "the gateway fetched the keys once (for the forged signature), none of the others did"
    );
}

#[tokio::test]
async fn delegated_tokens_are_accepted_only_when_configured_and_still_by_role() {
    let app = crate::helpers::spawn_app_with_config(
        six_tenants(),
        &[
            ("SCOREGATE__AUTH__ENABLED", "true"),
            ("SCOREGATE__AUTH__ENTRA__ACCEPT_DELEGATED", "true"),
        ],
        "",
    )
    .await;
    let user = json!({"claims": {"scp": "Scores.Read", "idtyp": "user"}});
    let with_role = crafted(&app, "portal", user.clone()).await;
    assert_eq!(
        get_as(&app, "/tenants", &with_role).await.status().as_u16(),
        200
    );
    let without_role = crafted(&app, "norole", user).await;
    let response = get_as(&app, "/tenants", &without_role).await;
    assert_eq!(
        response.status().as_u16(),
        403,
        "a user's token still needs a mapped role"
    );
}
