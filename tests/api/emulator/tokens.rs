//! Every token-endpoint refusal, with Entra's AADSTS code, OAuth error and status.

use super::{assert_entra_error, secret_of, start, start_healthy, Answer, Harness};
use scoregate::emulator::{EmulatorOptions, FaultProfile};
use scoregate::wire::DEFENDER_SCOPE;

/// A client-credentials form for `slug` with one field replaced or removed.
async fn request_with(app: &Harness, slug: &str, change: (&str, Option<&str>)) -> Answer {
    let tenant = app.tenant(slug);
    let client_id = tenant.client_id.to_string();
    let secret = secret_of(&tenant);
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", DEFENDER_SCOPE),
    ];
    form.retain(|(key, _)| *key != change.0);
    if let Some(value) = change.1 {
        form.push((change.0, value));
    }
    app.token_request(&tenant.tenant_id.to_string(), &form)
        .await
}

#[tokio::test]
async fn an_unknown_tenant_is_aadsts90002() {
    let app = start_healthy(1).await;
    let contoso = app.tenant("contoso");
    let client_id = contoso.client_id.to_string();
    let secret = secret_of(&contoso);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", DEFENDER_SCOPE),
    ];
    let unknown = uuid::Uuid::new_v4().to_string();
    let answer = app.token_request(&unknown, &form).await;
    assert_entra_error(&answer, 400, "invalid_request", 90002);
    let answer = app.token_request("nowhere.onmicrosoft.com", &form).await;
    assert_entra_error(&answer, 400, "invalid_request", 90002);
    let answer = app.token_request("not-a-tenant", &form).await;
    assert_entra_error(&answer, 400, "invalid_request", 900023);

    // Requests naming no tenant count in the total only.
    let stats = app.emu.stats();
    assert_eq!(
        (stats.total.token_requests, stats.total.token_errors),
        (3, 3)
    );
    assert!(stats.tenants.is_empty());
}

#[tokio::test]
async fn an_unknown_application_is_aadsts700016() {
    let app = start_healthy(2).await;
    let stranger = uuid::Uuid::new_v4().to_string();
    let answer = request_with(&app, "contoso", ("client_id", Some(&stranger))).await;
    assert_entra_error(&answer, 400, "unauthorized_client", 700016);
    assert!(answer.json()["error_description"]
        .as_str()
        .unwrap()
        .contains(&stranger));

    // Another tenant's app is not registered here either.
    let fabrikam_app = app.tenant("fabrikam").client_id.to_string();
    let answer = request_with(&app, "contoso", ("client_id", Some(&fabrikam_app))).await;
    assert_entra_error(&answer, 400, "unauthorized_client", 700016);
}

#[tokio::test]
async fn a_wrong_secret_is_aadsts7000215() {
    let app = start_healthy(1).await;
    let answer = request_with(&app, "contoso", ("client_secret", Some("abc8Q~wrong"))).await;
    assert_entra_error(&answer, 401, "invalid_client", 7000215);
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        (
            counters.token_requests,
            counters.tokens_issued,
            counters.token_errors
        ),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn an_expired_secret_is_aadsts7000222() {
    let app = start(EmulatorOptions {
        tenants: 2,
        faults: vec!["expired-secret=fabrikam".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    let answer = app.secret_token_request(&app.tenant("fabrikam")).await;
    assert_entra_error(&answer, 401, "invalid_client", 7000222);
    // A wrong secret is still reported as wrong, not as expired.
    let answer = request_with(&app, "fabrikam", ("client_secret", Some("nope"))).await;
    assert_entra_error(&answer, 401, "invalid_client", 7000215);
}

#[tokio::test]
async fn a_revoked_secret_is_aadsts7000215_even_when_it_is_the_right_one() {
    let app = start_healthy(2).await;
    let before = app.access_token("contoso").await;
    app.emu
        .set_fault("contoso", Some(FaultProfile::Revoked))
        .unwrap();
    let answer = app.secret_token_request(&app.tenant("contoso")).await;
    assert_entra_error(&answer, 401, "invalid_client", 7000215);
    // Tokens issued before the revocation stay valid until they expire, as with Entra.
    assert_eq!(app.score(&before).await.status, 200);
    app.emu.set_fault("contoso", None).unwrap();
    assert_eq!(
        app.secret_token_request(&app.tenant("contoso"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_scope_for_another_resource_is_aadsts500011() {
    let app = start_healthy(1).await;
    // Graph's scope is valid now (the emulator serves Graph); Azure Resource Manager is not.
    for scope in [
        "https://management.azure.com/.default",
        "https://eu.api.security.microsoft.com/.default",
    ] {
        let answer = request_with(&app, "contoso", ("scope", Some(scope))).await;
        assert_entra_error(&answer, 400, "invalid_resource", 500011);
    }
}

#[tokio::test]
async fn a_malformed_scope_is_aadsts70011() {
    let app = start_healthy(1).await;
    for scope in [
        "https://api.securitycenter.microsoft.com",
        "Score.Read.All",
        "https://api.securitycenter.microsoft.com/.default offline_access",
        "/.default",
    ] {
        let answer = request_with(&app, "contoso", ("scope", Some(scope))).await;
        assert_entra_error(&answer, 400, "invalid_scope", 70011);
    }
}

#[tokio::test]
async fn a_missing_parameter_is_aadsts900144() {
    let app = start_healthy(1).await;
    for parameter in ["grant_type", "client_id", "scope"] {
        let answer = request_with(&app, "contoso", (parameter, None)).await;
        assert_entra_error(&answer, 400, "invalid_request", 900144);
        let description = answer.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            description.contains(&format!("'{parameter}'")),
            "{description}"
        );
    }
    // An empty value counts as missing.
    let answer = request_with(&app, "contoso", ("scope", Some(""))).await;
    assert_entra_error(&answer, 400, "invalid_request", 900144);
}

#[tokio::test]
async fn a_request_without_any_credential_is_aadsts7000218() {
    let app = start_healthy(1).await;
    let answer = request_with(&app, "contoso", ("client_secret", None)).await;
    assert_entra_error(&answer, 401, "invalid_client", 7000218);
}

#[tokio::test]
async fn a_grant_type_other_than_client_credentials_is_aadsts70003() {
    let app = start_healthy(1).await;
    for grant in ["password", "authorization_code", "refresh_token"] {
        let answer = request_with(&app, "contoso", ("grant_type", Some(grant))).await;
        assert_entra_error(&answer, 400, "unsupported_grant_type", 70003);
    }
}
