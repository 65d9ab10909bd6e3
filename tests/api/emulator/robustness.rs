//! Malformed requests get Microsoft-shaped answers, never a panic or a plain-text error.

use super::{assert_defender_error, assert_entra_error, start, start_healthy};
use scoregate::emulator::{Emulator, EmulatorOptions};

#[tokio::test]
async fn a_body_that_is_not_a_form_is_missing_every_parameter() {
    let app = start_healthy(1).await;
    let url = app.emu.token_url(app.tenant("contoso").tenant_id);
    let answer = app
        .send(
            app.client
                .post(&url)
                .json(&serde_json::json!({"grant_type": "client_credentials"})),
        )
        .await;
    assert_entra_error(&answer, 400, "invalid_request", 900144);
    let answer = app.send(app.client.post(&url)).await;
    assert_entra_error(&answer, 400, "invalid_request", 900144);
}

#[tokio::test]
async fn broken_form_encoding_and_duplicates_are_refused_in_entra_shape() {
    let app = start_healthy(1).await;
    let url = app.emu.token_url(app.tenant("contoso").tenant_id);
    let form = |body: &'static [u8]| {
        app.client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let answer = app
        .send(form(b"grant_type=%ZZ&&=&client_id=\xff\xfe"))
        .await;
    assert_entra_error(&answer, 400, "unsupported_grant_type", 70003);
    let answer = app
        .send(form(
            b"grant_type=client_credentials&grant_type=client_credentials",
        ))
        .await;
    assert_entra_error(&answer, 400, "invalid_request", 9000411);
}

#[tokio::test]
async fn a_huge_body_is_refused_without_reading_it_all() {
    let app = start_healthy(1).await;
    let url = app.emu.token_url(app.tenant("contoso").tenant_id);
    let huge = format!(
        "grant_type=client_credentials&padding={}",
        "x".repeat(64 * 1024)
    );
    let answer = app
        .send(
            app.client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(huge.clone()),
        )
        .await;
    assert_entra_error(&answer, 413, "invalid_request", 9002313);

    let answer = app
        .send(app.client.get(app.emu.score_url()).body(huge))
        .await;
    assert_defender_error(&answer, 413, "BadRequest");
}

#[tokio::test]
async fn bad_authorization_headers_get_defenders_401() {
    let app = start_healthy(1).await;
    for header in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer not.a.jwt"),
        Some("Bearer eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ4In0."),
    ] {
        let answer = app.get_score(header).await;
        assert_defender_error(&answer, 401, "Unauthorized");
    }
    let stats = app.emu.stats();
    assert_eq!((stats.total.score_calls, stats.total.responses_4xx), (7, 7));
    assert!(stats.tenants.is_empty());
}

#[tokio::test]
async fn a_token_from_another_emulator_is_refused() {
    let app = start_healthy(1).await;
    let other = start_healthy(1).await;
    let foreign = other.access_token("contoso").await;
    let answer = app.score(&foreign).await;
    assert_defender_error(&answer, 401, "Unauthorized");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_microsoft_shaped_errors() {
    let app = start_healthy(1).await;
    let base = app.emu.base_url();

    let answer = app
        .send(app.client.get(format!("{base}/api/nothing")))
        .await;
    assert_defender_error(&answer, 404, "ResourceNotFound");
    let answer = app.send(app.client.post(app.emu.score_url())).await;
    assert_defender_error(&answer, 405, "MethodNotAllowed");
    let token_url = app.emu.token_url(app.tenant("contoso").tenant_id);
    let answer = app.send(app.client.get(&token_url)).await;
    assert_entra_error(&answer, 400, "invalid_request", 900561);
}

#[tokio::test]
async fn operator_endpoints_refuse_bad_input_in_defender_shape() {
    let app = start_healthy(1).await;
    let base = app.emu.base_url();
    let fault = format!("{base}/_emulator/tenants/contoso/fault");
    let answer = app.send(app.client.post(&fault).body("{not json")).await;
    assert_defender_error(&answer, 400, "BadRequest");
    let answer = app
        .send(
            app.client
                .post(&fault)
                .json(&serde_json::json!({"fault": "on-fire"})),
        )
        .await;
    assert_defender_error(&answer, 400, "BadRequest");
    let answer = app
        .send(
            app.client
                .post(format!("{base}/_emulator/tenants/nobody/fault"))
                .json(&serde_json::json!({"fault": null})),
        )
        .await;
    assert_defender_error(&answer, 404, "NotFound");
    for query in ["", "?seconds=-5", "?seconds=soon"] {
        let answer = app
            .send(
                app.client
                    .post(format!("{base}/_emulator/clock/advance{query}")),
            )
            .await;
        assert_defender_error(&answer, 400, "BadRequest");
    }
    let answer = app
        .send(
            app.client
                .post(format!("{base}/_emulator/clock/advance?seconds=3600")),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["offset_seconds"], 3600);

    let ca = app
        .send(app.client.get(format!("{base}/_emulator/ca.pem")))
        .await;
    assert_eq!(ca.body, app.emu.ca_cert_pem());
}

#[tokio::test]
async fn the_server_certificate_is_valid_for_localhost_too() {
    let app = start_healthy(1).await;
    let url = format!(
        "https://localhost:{}/_emulator/stats",
        app.emu.addr().port()
    );
    let answer = app.send(app.client.get(url)).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_emulator_ca_cannot_connect() {
    let app = start_healthy(1).await;
    let other = start_healthy(1).await;
    let wrong_ca = super::client_for(&other.emu, None);
    assert!(wrong_ca.get(app.emu.score_url()).send().await.is_err());
}

#[tokio::test]
async fn invalid_options_are_refused_with_the_option_named() {
    for options in [
        EmulatorOptions {
            tenants: 0,
            ..EmulatorOptions::default()
        },
        EmulatorOptions {
            flaky_error_share: 1.5,
            ..EmulatorOptions::default()
        },
        EmulatorOptions {
            faults: vec!["hang=nobody".parse().unwrap()],
            ..EmulatorOptions::default()
        },
    ] {
        let error = Emulator::start(options).await.expect_err("refused");
        assert!(
            error.to_string().starts_with("invalid --") || error.to_string().contains("--fault"),
            "{error}"
        );
    }
    let app = start(EmulatorOptions {
        tenants: 1,
        ..EmulatorOptions::default()
    })
    .await;
    let taken = app.emu.addr();
    let error = Emulator::start(EmulatorOptions {
        bind: taken,
        ..EmulatorOptions::default()
    })
    .await
    .expect_err("the port is taken");
    assert!(error.to_string().contains("cannot listen"), "{error}");
}
