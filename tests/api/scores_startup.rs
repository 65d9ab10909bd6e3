//! `/scores` right after a start: today's past scores are loaded once per metric, and until
//! they are, every answer says so (`changes_ready: false`) instead of ordering silently by
//! nulls. The load is held by the test hook, so nothing here depends on timing.

use crate::helpers::{emulator_options, spawn_app_with, start_emulator};
use scoregate::history::{hold_past_load, release_past_load, Metric, Reading, Store};
use scoregate::model::TenantId;
use std::time::Duration;
use time::OffsetDateTime;

/// The emulator's tenant slugs for `tenants` tenants, sorted (the gateway's test apps start
/// the same emulator).
async fn slugs(tenants: usize) -> Vec<String> {
    let emulator = start_emulator(emulator_options(tenants, vec![])).await;
    let mut slugs: Vec<String> = emulator.tenants().into_iter().map(|t| t.slug).collect();
    slugs.sort();
    slugs
}

fn changes(body: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["tenant"].as_str().unwrap().to_owned(),
                item["change_7d"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_first_answers_after_a_start_say_the_changes_are_not_ready_until_one_read_per_metric_loads_them(
) {
    let tenants = slugs(3).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
    // A history from a previous run: points of the day 7 days ago for two of the tenants.
    let week_ago = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
        - time::Duration::days(7)
        + time::Duration::hours(12);
    let past = [(tenants[0].as_str(), 100.0), (tenants[1].as_str(), 900.0)];
    {
        let store = Store::connect(&url).await.expect("the database opens");
        let readings: Vec<Reading> = past
            .iter()
            .map(|(tenant, score)| {
                let id = TenantId::parse(tenant).unwrap();
                Reading::of_score(id, Metric::Device, *score, week_ago)
            })
            .collect();
        store.write(&readings).await.unwrap();
        store.pool().close().await;
    }

    hold_past_load(&url);
    let app = spawn_app_with(
        emulator_options(3, vec![]),
        &[("SCOREGATE__HISTORY__URL", url.as_str())],
    )
    .await;
    let history = app.services.history().expect("history is on").clone();
    let mut ids: Vec<String> = app.emulator.tenants().into_iter().map(|t| t.slug).collect();
    ids.sort();
    assert_eq!(ids, tenants, "the same emulator tenants");

    // Held: the answer sorted by change waits for the load up to its deadline, then says that
    // its changes are unknown, whatever `complete` says of the scores.
    let (status, _, body) = app.get_json("/scores?sort=change_7d&timeout_ms=300").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes_ready"], false, "{body}");
    for (tenant, change) in changes(&body) {
        assert!(change.is_null(), "{tenant}: {change}");
    }
    // Not sorted by change: the same, after a short grace.
    let (_, _, body) = app.get_json("/scores?timeout_ms=300").await;
    assert_eq!(body["changes_ready"], false, "{body}");
    assert_eq!(
        history.reads().attempts(),
        0,
        "the requests waited for the start-up load instead of reading for themselves"
    );

    release_past_load(&url);
    let loaded = async {
        while history.past_loads() < Metric::ALL.len() as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), loaded)
        .await
        .expect("the start-up load ends");
    assert_eq!(
        history.reads().attempts(),
        Metric::ALL.len() as u64,
        "one read per metric"
    );

    let (status, _, body) = app.get_json("/scores?sort=change_7d").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes_ready"], true, "{body}");
    let scores: std::collections::HashMap<String, f64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let score = item["score"].as_f64().expect("a score");
            (item["tenant"].as_str().unwrap().to_owned(), score)
        })
        .collect();
    let mut expected: Vec<(String, f64)> = past
        .iter()
        .map(|(tenant, then)| (tenant.to_string(), scores[*tenant] - then))
        .collect();
    expected.sort_by(|a, b| a.1.total_cmp(&b.1));
    let found = changes(&body);
    assert_eq!(found.len(), 3, "{body}");
    for ((tenant, change), (expected_tenant, expected_change)) in found.iter().zip(&expected) {
        assert_eq!(tenant, expected_tenant, "biggest drop first: {body}");
        let change = change.as_f64().expect("a change");
        assert!(
            (change - expected_change).abs() < 1e-6,
            "{tenant}: {change}"
        );
    }
    assert_eq!(found[2].0, tenants[2]);
    assert!(found[2].1.is_null(), "no point that old: last");
    assert_eq!(
        history.reads().attempts(),
        Metric::ALL.len() as u64,
        "the changes came from memory"
    );
}

#[tokio::test]
async fn with_the_history_off_the_changes_are_never_ready() {
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__HISTORY__ENABLED", "false")],
    )
    .await;
    let (status, _, body) = app.get_json("/scores?sort=change_7d").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["complete"], true, "{body}");
    assert_eq!(body["changes_ready"], false, "{body}");
}
