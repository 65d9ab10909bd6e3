//! The happy path: a client secret gets a token, the token gets the score, in Microsoft's shapes.

use super::{assert_defender_error, start_healthy, Harness};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use scoregate::emulator::{CredentialKind, EmulatorOptions};
use scoregate::wire::{ConfigurationScore, DEFENDER_RESOURCE, DEFENDER_SCOPE};
use std::time::Duration;

/// The claims part of a JWT, decoded (no verification: the test reads what the client sees).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// Whether `time` is RFC 3339 UTC with exactly seven fractional digits.
fn has_seven_fractional_digits(time: &str) -> bool {
    let Some((_, fraction)) = time.split_once('.') else {
        return false;
    };
    fraction.len() == 8
        && fraction.ends_with('Z')
        && fraction[..7].bytes().all(|b| b.is_ascii_digit())
        && time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok()
}

#[tokio::test]
async fn a_client_secret_gets_a_token_and_the_token_gets_the_score() {
    let app = start_healthy(3).await;
    let contoso = app.tenant("contoso");

    let answer = app.secret_token_request(&contoso).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token: serde_json::Value = answer.json();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3599);
    assert_eq!(token["ext_expires_in"], 3599);
    let access_token = token["access_token"].as_str().expect("a token");

    let claims = claims_of(access_token);
    assert_eq!(claims["aud"], DEFENDER_RESOURCE);
    assert_eq!(claims["tid"], contoso.tenant_id.to_string());
    assert_eq!(claims["appid"], contoso.client_id.to_string());
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", contoso.tenant_id)
    );
    assert_eq!(claims["roles"], serde_json::json!(["Score.Read.All"]));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3599);

    let score = app.score(access_token).await;
    assert_eq!(score.status, 200, "{}", score.body);
    let body = score.json();
    assert_eq!(
        body["@odata.context"],
        "https://api.security.microsoft.com/api/$metadata#ConfigurationScore/$entity"
    );
    let parsed: ConfigurationScore = serde_json::from_str(&score.body).expect("the wire type");
    assert!(parsed.score > 0.0);
    assert!(has_seven_fractional_digits(&parsed.time), "{}", parsed.time);

    let stats = app.emu.stats();
    let counters = stats.tenant("contoso");
    assert_eq!((counters.token_requests, counters.tokens_issued), (1, 1));
    assert_eq!((counters.score_calls, counters.responses_2xx), (1, 1));
    assert_eq!(stats.total, counters);
    app.emu.stop().await;
}

#[tokio::test]
async fn the_score_time_is_the_emulator_clock_in_utc_with_seven_fractional_digits() {
    let app = start_healthy(1).await;
    let token = app.access_token("contoso").await;
    app.emu.advance_clock(Duration::from_secs(600));
    let body = app.score(&token).await.json();
    let time = body["time"].as_str().expect("a time");
    assert!(has_seven_fractional_digits(time), "{time}");
    let answered =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).unwrap();
    let ahead = answered - time::OffsetDateTime::now_utc();
    assert!(ahead > time::Duration::seconds(590), "{ahead}");
}

#[tokio::test]
async fn a_token_expires_on_the_emulator_clock() {
    let app = start_healthy(1).await;
    let token = app.access_token("contoso").await;
    assert_eq!(app.score(&token).await.status, 200);

    app.emu.advance_clock(Duration::from_secs(3_599));
    let expired = app.score(&token).await;
    assert_defender_error(&expired, 401, "Unauthorized");
    assert_eq!(
        expired.header("www-authenticate").as_deref(),
        Some("Bearer")
    );

    // A new token works again.
    let fresh = app.access_token("contoso").await;
    assert_eq!(app.score(&fresh).await.status, 200);
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!((counters.responses_2xx, counters.responses_4xx), (2, 1));
}

#[tokio::test]
async fn the_token_endpoint_accepts_the_tenant_domain_in_place_of_its_id() {
    let app = start_healthy(2).await;
    let fabrikam = app.tenant("fabrikam");
    let secret = super::secret_of(&fabrikam);
    let client_id = fabrikam.client_id.to_string();
    let answer = app
        .token_request(
            "fabrikam.onmicrosoft.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("scope", DEFENDER_SCOPE),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&token)["tid"], fabrikam.tenant_id.to_string());
}

#[tokio::test]
async fn shared_tenants_use_one_msp_app_consented_in_each_tenant() {
    let app: Harness = super::start(EmulatorOptions {
        tenants: 4,
        credentials: vec!["shared=contoso,fabrikam".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    let contoso = app.tenant("contoso");
    let fabrikam = app.tenant("fabrikam");
    let northwind = app.tenant("northwind");
    assert_eq!(contoso.credential_kind(), CredentialKind::Shared);
    assert_eq!(contoso.client_id, app.emu.msp_client_id());
    assert_eq!(contoso.client_id, fabrikam.client_id);
    assert_eq!(super::secret_of(&contoso), super::secret_of(&fabrikam));
    assert_ne!(northwind.client_id, contoso.client_id);

    for slug in ["contoso", "fabrikam"] {
        let token = app.access_token(slug).await;
        assert_eq!(app.score(&token).await.status, 200);
    }
    // The MSP app is not consented in northwind.
    let client_id = contoso.client_id.to_string();
    let secret = super::secret_of(&contoso);
    let refused = app
        .token_request(
            &northwind.tenant_id.to_string(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("scope", DEFENDER_SCOPE),
            ],
        )
        .await;
    super::assert_entra_error(&refused, 400, "unauthorized_client", 700016);
}
