//! The two history routes: status, body, CSV, the caller's scope, every 400, and history turned
//! off.

use crate::helpers::{emulator_options, spawn_app_with, spawn_app_with_config, TestApp};
use crate::history::reading;
use scoregate::auth::generate_key;
use scoregate::history::Store;
use std::time::Duration;
use time::OffsetDateTime;

/// The store of a running gateway, once connected.
async fn store_of(app: &TestApp) -> Store {
    let history = app.services.history().expect("history is on");
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("the history database opens");
    history.store().unwrap().clone()
}

/// Readings of the last three days for contoso (gold) and fabrikam, straight into the store.
async fn seed(store: &Store) -> OffsetDateTime {
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let mut readings = Vec::new();
    for (tenant, base) in [("contoso", 300.0), ("fabrikam", 100.0)] {
        for day in 1..=3 {
            let at = today - time::Duration::days(day) + time::Duration::hours(12);
            readings.push(reading(tenant, at, base + day as f64));
        }
    }
    store.write(&readings).await.unwrap();
    today
}

async fn get(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tenant_history_answers_json_and_csv_within_the_callers_scope() {
    let (contoso_key, contoso_digest) = generate_key().unwrap();
    let (all_key, all_digest) = generate_key().unwrap();
    let keys = format!(
        "[[api_keys]]\nname = \"contoso-portal\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"all\"\nsha256 = \"{all_digest}\"\ntenants = [\"*\"]\n"
    );
    let app = spawn_app_with_config(
        emulator_options(6, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true")],
        &keys,
    )
    .await;
    let today = seed(&store_of(&app).await).await;

    let response = get(&app, "/tenants/contoso/history", &contoso_key).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tenant"], "contoso");
    assert_eq!(body["metric"], "device");
    assert_eq!(body["interval"], "day");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let stamp = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        points[2],
        serde_json::json!({"at": stamp(today - time::Duration::days(1)), "score": 301.0,
                           "min": 301.0, "max": 301.0, "samples": 1})
    );

    // CSV by parameter and by Accept.
    let response = get(
        &app,
        "/tenants/contoso/history?format=csv&interval=week",
        &contoso_key,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("at,score,min,max,samples,max_score\r\n"),
        "{text}"
    );
    let response = app
        .client
        .get(format!("{}/tenants/contoso/history", app.address))
        .bearer_auth(&contoso_key)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");

    // Outside the key's scope is unknown, exactly as a tenant that does not exist.
    for path in ["/tenants/fabrikam/history", "/tenants/nope/history"] {
        let response = get(&app, path, &contoso_key).await;
        assert_eq!(response.status().as_u16(), 404);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unknown_tenant");
    }
    let response = get(&app, "/tenants/fabrikam/history", &all_key).await;
    assert_eq!(response.status().as_u16(), 200);

    // The portfolio: the contoso key sees contoso only; the other key both.
    let (_, body) = json(get(&app, "/scores/history", &contoso_key).await).await;
    assert!(body["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["tenants"] == 1 && p["max"].as_f64().unwrap() > 300.0));
    let (status, body) = json(get(&app, "/scores/history", &all_key).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["metric"], "device");
    let last = body["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        serde_json::json!({"at": stamp(today - time::Duration::days(1)), "tenants": 2,
                           "mean": 201.0, "median": 201.0, "min": 101.0, "max": 301.0})
    );
    let (_, body) = json(get(&app, "/scores/history?tenant=fabrikam", &all_key).await).await;
    assert!(body["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["tenants"] == 1 && p["max"].as_f64().unwrap() < 200.0));
    let response = get(&app, "/scores/history?format=csv", &all_key).await;
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("at,tenants,mean,median,min,max\r\n"),
        "{text}"
    );
}

async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn every_bad_history_query_is_a_400_naming_its_parameter() {
    let app = spawn_app_with(emulator_options(1, vec![]), &[]).await;
    let tenant = app.emulator.tenants()[0].slug.clone();
    let cases = [
        ("metric=score", "metric:"),
        ("interval=month", "interval:"),
        ("from=yesterday", "from:"),
        ("to=2026-11-29", "to:"),
        (
            "from=2026-11-20T00:00:00Z&to=2026-11-10T00:00:00Z",
            "from: after to",
        ),
        (
            "from=2001-01-01T00:00:00Z",
            "from: older than the retention",
        ),
        ("to=2001-01-01T00:00:00Z", "to: older than the retention"),
        ("format=xml", "format:"),
        ("unknown=1", "unknown"),
    ];
    for route in [
        format!("/tenants/{tenant}/history"),
        "/scores/history".to_owned(),
    ] {
        for (query, expected) in cases {
            let (status, _, body) = app.get_json(&format!("{route}?{query}")).await;
            assert_eq!(status, 400, "{route}?{query}: {body}");
            assert_eq!(body["code"], "invalid_request");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains(expected), "{route}?{query}: {detail}");
        }
    }
}

#[tokio::test]
async fn history_turned_off_answers_history_disabled() {
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__HISTORY__ENABLED", "false")],
    )
    .await;
    assert!(app.services.history().is_none());
    let tenant = app.emulator.tenants()[0].slug.clone();
    for path in [
        format!("/tenants/{tenant}/history"),
        "/scores/history".to_owned(),
    ] {
        let (status, _, body) = app.get_json(&path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "history_disabled");
    }
}
