//! `GET /tenants/{id}/controls/{control}/history` against a gateway on the emulator, its store
//! seeded directly: the shape, the caller's scope, 404 `unknown_control`, `metric_not_enabled`
//! and `history_disabled`, and the 400s of a malformed control id or range.

use crate::control_history::point;
use crate::helpers::{emulator_options, spawn_app_with, spawn_app_with_config, TestApp};
use scoregate::auth::generate_key;
use scoregate::controls::State;
use scoregate::history::{ControlPoint, Store};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Every metric for every tenant: the route needs `secure`.
pub(crate) const SECURE: (&str, &str) = (
    "SCOREGATE__UPSTREAM__METRICS",
    r#"["device","exposure","secure"]"#,
);

async fn store_of(app: &TestApp) -> Store {
    let history = app.services.history().expect("history is on");
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("the history database opens");
    history.store().unwrap().clone()
}

async fn get(app: &TestApp, path: &str, key: &str) -> (u16, serde_json::Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn stamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// A control id [`seed`] stores, for the tests that walk every route.
pub(crate) const SEEDED_CONTROL: &str = "MFARegistrationV2";

/// [`seed`] into a running gateway's store.
pub(crate) async fn seed_app(app: &TestApp) {
    seed(&store_of(app).await).await;
}

/// Ten days of contoso's and fabrikam's controls: `MFARegistrationV2` done until 5 days ago,
/// then at 4 of 10.
async fn seed(store: &Store) -> OffsetDateTime {
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let days: Vec<(OffsetDateTime, Vec<ControlPoint>)> = (1..=10)
        .rev()
        .map(|day| {
            let score = if day > 5 { 10.0 } else { 4.0 };
            (
                today - time::Duration::days(day),
                vec![
                    point("MFARegistrationV2", score, State::Default),
                    point("scid_2010", 3.0, State::Reviewed),
                ],
            )
        })
        .collect();
    for tenant in ["contoso", "fabrikam"] {
        store.insert_control_days(tenant, &days).await.unwrap();
    }
    today
}

#[tokio::test]
async fn a_controls_history_is_one_point_per_change_within_the_callers_scope() {
    let (contoso_key, contoso_digest) = generate_key().unwrap();
    let keys = format!(
        "[[api_keys]]\nname = \"contoso-portal\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n"
    );
    let app = spawn_app_with_config(
        emulator_options(2, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true"), SECURE],
        &keys,
    )
    .await;
    let today = seed(&store_of(&app).await).await;

    let (status, body) = get(
        &app,
        "/tenants/contoso/controls/MFARegistrationV2/history",
        &contoso_key,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "tenant": "contoso",
            "control": "MFARegistrationV2",
            "points": [
                {"at": stamp(today - time::Duration::days(10)), "score": 10.0, "max_score": 10.0, "state": "default"},
                {"at": stamp(today - time::Duration::days(5)), "score": 4.0, "max_score": 10.0, "state": "default"},
            ]
        })
    );
    // A range after the last change: the change in force at `from`.
    let from = stamp(today - time::Duration::days(2));
    let (status, body) = get(
        &app,
        &format!("/tenants/contoso/controls/scid_2010/history?from={from}"),
        &contoso_key,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["points"][0]["state"], "reviewed");

    // Outside the key's scope is unknown, as a tenant that does not exist.
    for tenant in ["fabrikam", "nope"] {
        let path = format!("/tenants/{tenant}/controls/MFARegistrationV2/history");
        let (status, body) = get(&app, &path, &contoso_key).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["code"], "unknown_tenant");
    }
    // A control the tenant has no history of.
    let (status, body) = get(
        &app,
        "/tenants/contoso/controls/NoSuchControl/history",
        &contoso_key,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "unknown_control");
    assert_eq!(body["title"], "Unknown control");

    // Malformed ids and ranges.
    let long = "a".repeat(201);
    for (path, names) in [
        (format!("/tenants/contoso/controls/{long}/history"), "control"),
        ("/tenants/contoso/controls/a%20b/history".to_owned(), "control"),
        (
            "/tenants/contoso/controls/scid_2010/history?from=yesterday".to_owned(),
            "from",
        ),
        (
            "/tenants/contoso/controls/scid_2010/history?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z"
                .to_owned(),
            "from",
        ),
        (
            "/tenants/contoso/controls/scid_2010/history?metric=secure".to_owned(),
            "metric",
        ),
    ] {
        let (status, body) = get(&app, &path, &contoso_key).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "invalid_request");
        assert!(
            body["detail"].as_str().unwrap().contains(names),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_tenant_without_secure_has_no_control_history_and_history_off_has_none() {
    let app = spawn_app_with(emulator_options(1, vec![]), &[]).await;
    seed(&store_of(&app).await).await;
    let (status, _, body) = app
        .get_json("/tenants/contoso/controls/MFARegistrationV2/history")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "metric_not_enabled");

    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__HISTORY__ENABLED", "false"), SECURE],
    )
    .await;
    let (status, _, body) = app
        .get_json("/tenants/contoso/controls/MFARegistrationV2/history")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "history_disabled");
}
