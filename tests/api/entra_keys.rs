//! The issuer's signing keys as the gateway sees them: a rotated key is fetched on its first
//! unknown `kid` (and the next unknown one within five minutes is not: the floor; its passing
//! is tested on tokio's paused clock by the unit tests of `auth::jwks`, since this gateway runs
//! on real time), cached keys keep working while the key endpoint is down, no key at all is a
//! clear 401, and ten thousand bad tokens leave nothing behind.

use crate::entra::{emulator_client, get_as, keys, six_tenants, spawn_entra, token};
use crate::helpers::TestApp;
use futures::StreamExt as _;

async fn rotate(app: &TestApp) -> String {
    let answer: serde_json::Value = emulator_client(app)
        .post(format!("{}/_emulator/keys/rotate", app.emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["kid"].as_str().unwrap().to_owned()
}

async fn outage(app: &TestApp, down: bool) {
    let response = emulator_client(app)
        .post(format!("{}/_emulator/keys/outage", app.emulator.base_url()))
        .json(&serde_json::json!({ "down": down }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

async fn jwks_requests(app: &TestApp) -> u64 {
    keys(app).await["jwks_requests"].as_u64().unwrap()
}

async fn status(app: &TestApp, token: &str) -> u16 {
    get_as(app, "/tenants", token).await.status().as_u16()
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_a_second_unknown_kid_waits_for_the_floor() {
    let app = spawn_entra(six_tenants(), "").await;
    let before = token(&app, "portal", 2).await;
    assert_eq!(status(&app, &before).await, 200);
    assert_eq!(
        jwks_requests(&app).await,
        1,
        "keys fetched on the first token"
    );
    assert_eq!(status(&app, &before).await, 200);
    assert_eq!(jwks_requests(&app).await, 1, "then served from the cache");

    rotate(&app).await;
    let after = token(&app, "portal", 2).await;
    assert_eq!(status(&app, &after).await, 200, "the unknown kid refetches");
    assert_eq!(jwks_requests(&app).await, 2);
    assert_eq!(
        status(&app, &before).await,
        200,
        "the previous key still verifies"
    );

    rotate(&app).await;
    let too_soon = token(&app, "portal", 2).await;
    let response = get_as(&app, "/tenants", &too_soon).await;
    assert_eq!(
        response.status().as_u16(),
        401,
        "within five minutes: no refetch"
    );
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("signing key (kid) is not one of the issuer's keys"),
        "{challenge}"
    );
    assert_eq!(jwks_requests(&app).await, 2);
    assert_eq!(status(&app, &after).await, 200);
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_key_endpoint_is_down() {
    let app = spawn_entra(six_tenants(), "").await;
    let portal = token(&app, "portal", 2).await;
    assert_eq!(status(&app, &portal).await, 200);
    outage(&app, true).await;
    assert_eq!(status(&app, &portal).await, 200);
    assert_eq!(status(&app, &token(&app, "ops", 1).await).await, 200);
    // A rotated key cannot be fetched now: that token is refused, with a 401, not a 500.
    rotate(&app).await;
    let rotated = token(&app, "portal", 2).await;
    assert_eq!(status(&app, &rotated).await, 401);
    assert_eq!(status(&app, &rotated).await, 401);
    let configuration = keys(&app).await["openid_configuration_requests"].as_u64();
    assert_eq!(configuration, Some(2), "the refetch was tried once");
    assert_eq!(
        status(&app, &portal).await,
        200,
        "the cached key still verifies"
    );
}

#[tokio::test]
async fn with_no_key_cached_a_down_key_endpoint_is_a_401_with_a_clear_reason() {
    let app = spawn_entra(six_tenants(), "").await;
    outage(&app, true).await;
    let portal = token(&app, "portal", 2).await;
    let response = get_as(&app, "/tenants", &portal).await;
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error_description=\"the issuer's OpenID configuration could not be fetched; no signing key is known yet\""),
        "{challenge}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    // Refused again at once, without asking the endpoint again (retries are spaced).
    let configuration = keys(&app).await["openid_configuration_requests"]
        .as_u64()
        .unwrap();
    assert_eq!(status(&app, &portal).await, 401);
    assert_eq!(
        keys(&app).await["openid_configuration_requests"]
            .as_u64()
            .unwrap(),
        configuration
    );
}

/// The series of `/metrics` (each line's name and labels, without the value).
async fn series(app: &TestApp, operator: &str) -> Vec<String> {
    let text = get_as(app, "/metrics", operator)
        .await
        .text()
        .await
        .unwrap();
    let mut series: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' ').map(|(name, _)| name.to_owned()))
        .collect();
    series.sort();
    series
}

#[tokio::test]
async fn ten_thousand_distinct_bad_tokens_leave_no_series_keys_or_limiters_behind() {
    let app = spawn_entra(six_tenants(), "").await;
    let ops = token(&app, "ops", 2).await;
    let portal = token(&app, "portal", 2).await;
    let payload = portal.split('.').nth(1).unwrap().to_owned();
    let kid_header = portal.split('.').next().unwrap().to_owned();
    let bad = |index: usize| -> String {
        use base64::Engine as _;
        let encode = |json: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        match index % 4 {
            // Made-up key ids.
            0 => format!(
                "{}.{payload}.c2ln",
                encode(format!(r#"{{"alg":"RS256","kid":"made-up-{index}"}}"#))
            ),
            // The real key id, a wrong signature.
            1 => format!(
                "{kid_header}.{payload}.{}",
                encode(format!("forged-{index}"))
            ),
            // alg none.
            2 => format!(
                "{}.{payload}.",
                encode(format!(r#"{{"alg":"none","n":{index}}}"#))
            ),
            // Not even a JWT: an unknown API key.
            _ => format!("sg_not-a-key-{index}"),
        }
    };
    // One of each kind first, so that every 401 series exists before the count.
    for index in 0..4 {
        assert_eq!(status(&app, &bad(index)).await, 401);
    }
    assert_eq!(status(&app, &ops).await, 200);
    // The first scrape creates the series of `/metrics` itself.
    series(&app, &ops).await;
    let before = series(&app, &ops).await;
    let fetches = jwks_requests(&app).await;

    let statuses: Vec<u16> = futures::stream::iter(4..10_004)
        .map(|index| {
            let app = &app;
            let token = bad(index);
            async move { status(app, &token).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|status| *status == 401));

    assert_eq!(series(&app, &ops).await, before, "no new metric series");
    assert!(
        jwks_requests(&app).await <= fetches + 1,
        "made-up kids cause at most one refetch (the floor)"
    );
    let entra = app.services.entra().expect("Entra callers are configured");
    assert_eq!(entra.cached_keys(), 1, "only the issuer's key is cached");
    assert_eq!(
        status(&app, &portal).await,
        200,
        "real callers are unaffected"
    );
}
