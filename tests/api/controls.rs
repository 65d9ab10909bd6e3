//! `GET /tenants/{id}/controls` over real HTTPS against the emulator: the join of the newest
//! snapshot with the tenant's profiles (every page, `@odata.nextLink` followed), string-typed
//! numbers read, HTML stripped, ignored and third-party controls with nothing to gain, filters,
//! sorts, CSV, profiles fetched once and again on `max_age=0`, the 404s — each proven with the
//! emulator's counters — and, with history on, the controls reaching the per-control history.

use crate::helpers::{emulator_options, spawn_app_with, TestApp};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Every tenant has `secure` only; no history (its back-fill would add Graph calls of its own).
async fn spawn(tenants: usize) -> TestApp {
    spawn_app_with(
        emulator_options(tenants, vec![]),
        &[
            ("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#),
            ("SCOREGATE__HISTORY__ENABLED", "false"),
        ],
    )
    .await
}

fn controls(body: &Value) -> &Vec<Value> {
    body["controls"].as_array().expect("a controls array")
}

fn ids(body: &Value) -> Vec<String> {
    controls(body)
        .iter()
        .map(|control| control["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenants_controls_join_its_newest_snapshot_with_every_page_of_its_profiles() {
    let app = spawn(2).await;
    let (status, _, body) = app.get_json("/tenants/contoso/controls").await;
    assert_eq!(status, 200, "{body}");
    let (_, _, score) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(body["tenant"], "contoso");
    assert_eq!(body["time"], score["time"], "the score's snapshot");
    assert_eq!(body["score"], score["score"]);
    assert_eq!(body["max_score"], score["max_score"]);
    assert!(body["fetched_at"].is_string() && body["age_seconds"].is_u64());
    assert_eq!(body["source"], "upstream", "{body}");

    let list = controls(&body);
    assert!((60..=80).contains(&list.len()), "{}", list.len());
    for field in [
        "id",
        "title",
        "category",
        "service",
        "score",
        "max_score",
        "percentage",
        "status",
        "state",
        "points_to_gain",
        "rank",
        "tier",
        "action_type",
        "action_url",
        "user_impact",
        "implementation_cost",
        "threats",
        "implementation_status",
        "count",
        "total",
        "deprecated",
        "last_synced",
    ] {
        assert!(list.iter().all(|c| c.get(field).is_some()), "{field}");
    }
    // Every control of the snapshot found its profile: the second page was followed too.
    assert!(list
        .iter()
        .all(|c| c["title"].is_string() && c["max_score"].is_number()));
    let calls = app.emulator.stats().tenant("contoso");
    assert_eq!(calls.control_profile_calls, 2, "two pages: {calls:?}");
    assert_eq!(
        calls.graph_calls, 1,
        "the snapshot is the score's: {calls:?}"
    );

    // Numbers Graph sent as strings are numbers; the control scores sum to the score.
    assert!(list.iter().all(|c| c["score"].is_number()));
    let sum: f64 = list.iter().map(|c| c["score"].as_f64().unwrap()).sum();
    assert!((sum - body["score"].as_f64().unwrap()).abs() < 0.1, "{sum}");
    assert!(list
        .iter()
        .any(|c| c["count"].is_u64() && c["total"].is_u64()));
    // Plain texts: HTML stripped, entities decoded; the action URL kept.
    for control in list {
        for field in ["title", "implementation_status"] {
            if let Some(text) = control[field].as_str() {
                assert!(!text.contains('<') && !text.contains("&amp;"), "{text}");
            }
        }
    }
    assert!(list.iter().any(|c| c["implementation_status"].is_string()));
    assert!(list.iter().any(|c| c["action_url"]
        .as_str()
        .is_some_and(|url| url.starts_with("https://"))));

    // Ignored and third-party controls have nothing to gain; the others gain max - score.
    for state in ["ignored", "third_party"] {
        let settled: Vec<&Value> = list.iter().filter(|c| c["state"] == state).collect();
        assert!(!settled.is_empty(), "some {state}");
        assert!(
            settled.iter().all(|c| c["points_to_gain"] == 0.0),
            "{state}"
        );
    }
    for control in list.iter().filter(|c| c["state"] == "default") {
        let gain = control["max_score"].as_f64().unwrap() - control["score"].as_f64().unwrap();
        assert!((control["points_to_gain"].as_f64().unwrap() - gain.max(0.0)).abs() < 0.01);
        let status = match control["score"].as_f64().unwrap() {
            score if score <= 0.0 => "todo",
            _ if gain < 0.005 => "done",
            _ => "partial",
        };
        assert_eq!(control["status"], status, "{control}");
    }

    // Sorted by Microsoft's rank by default.
    let ranks: Vec<u64> = list.iter().map(|c| c["rank"].as_u64().unwrap()).collect();
    assert!(ranks.windows(2).all(|pair| pair[0] <= pair[1]), "{ranks:?}");
}

#[tokio::test]
async fn profiles_are_fetched_once_per_tenant_and_again_when_a_caller_forces_it() {
    let app = spawn(2).await;
    for _ in 0..3 {
        let (status, _, body) = app.get_json("/tenants/contoso/controls").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, _) = app.get_json("/tenants/fabrikam/controls").await;
    assert_eq!(status, 200);
    let stats = app.emulator.stats();
    assert_eq!(stats.tenant("contoso").control_profile_calls, 2);
    assert_eq!(stats.tenant("fabrikam").control_profile_calls, 2);
    assert_eq!(stats.tenant("contoso").graph_calls, 1);

    // Forced: the score and every page of the profiles again.
    let (status, _, body) = app.get_json("/tenants/contoso/controls?max_age=0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "upstream");
    let contoso = app.emulator.stats().tenant("contoso");
    assert_eq!(contoso.control_profile_calls, 4, "{contoso:?}");
    assert_eq!(contoso.graph_calls, 2, "{contoso:?}");
    let (_, _, again) = app.get_json("/tenants/contoso/controls").await;
    assert_eq!(again["source"], "cache");
    assert_eq!(
        app.emulator.stats().tenant("contoso").control_profile_calls,
        4
    );
}

#[tokio::test]
async fn filters_and_sorts_apply_and_device_controls_are_the_scid_checks() {
    let app = spawn(1).await;
    let (_, _, all) = app.get_json("/tenants/contoso/controls").await;
    let total = controls(&all).len();

    let (status, _, device) = app
        .get_json("/tenants/contoso/controls?category=device")
        .await;
    assert_eq!(status, 200, "{device}");
    let device_ids = ids(&device);
    assert!(!device_ids.is_empty());
    assert!(controls(&device).iter().all(|c| c["category"] == "device"));
    assert!(
        device_ids.iter().any(|id| id.starts_with("scid_")),
        "{device_ids:?}"
    );

    let mut by_parts = 0;
    for status in ["done", "partial", "todo"] {
        let (code, _, part) = app
            .get_json(&format!("/tenants/contoso/controls?status={status}"))
            .await;
        assert_eq!(code, 200);
        assert!(controls(&part).iter().all(|c| c["status"] == status));
        by_parts += controls(&part).len();
    }
    assert_eq!(by_parts, total, "the statuses partition the controls");

    let (_, _, ignored) = app
        .get_json("/tenants/contoso/controls?state=ignored")
        .await;
    assert!(!controls(&ignored).is_empty());
    assert!(controls(&ignored).iter().all(|c| c["state"] == "ignored"));

    let service = controls(&all)[0]["service"].as_str().unwrap().to_owned();
    let (_, _, by_service) = app
        .get_json(&format!(
            "/tenants/contoso/controls?service={}",
            service.to_ascii_lowercase()
        ))
        .await;
    assert!(!controls(&by_service).is_empty());
    assert!(controls(&by_service)
        .iter()
        .all(|c| c["service"] == service.as_str()));

    let (_, _, by_gain) = app
        .get_json("/tenants/contoso/controls?sort=-points_to_gain")
        .await;
    let gains: Vec<f64> = controls(&by_gain)
        .iter()
        .map(|c| c["points_to_gain"].as_f64().unwrap())
        .collect();
    assert!(gains.windows(2).all(|pair| pair[0] >= pair[1]), "{gains:?}");
    let (_, _, by_id) = app.get_json("/tenants/contoso/controls?sort=id").await;
    let sorted = ids(&by_id);
    let mut expected = sorted.clone();
    expected.sort();
    assert_eq!(sorted, expected);
    assert_eq!(sorted.len(), total);
}

#[tokio::test]
async fn bad_values_are_400s_naming_the_parameter() {
    let app = spawn(1).await;
    for (query, parameter) in [
        ("category=devices", "category"),
        ("status=finished", "status"),
        ("state=thirdparty", "state"),
        ("sort=-rank", "sort"),
        ("max_age=-1", "max_age"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
    ] {
        let response = app.get(&format!("/tenants/contoso/controls?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_request");
        assert!(
            body["detail"].as_str().unwrap().contains(parameter),
            "{query}: {body}"
        );
    }
    assert_eq!(app.emulator.stats().total.control_profile_calls, 0);
}

#[tokio::test]
async fn the_controls_come_as_csv_one_row_each() {
    let app = spawn(1).await;
    let (_, _, json) = app.get_json("/tenants/contoso/controls?sort=id").await;
    let response = app
        .get("/tenants/contoso/controls?sort=id&format=csv")
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[..3], ["tenant", "id", "title"]);
    assert!(header.contains(&"points_to_gain".to_owned()));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), controls(&json).len());
    for (row, control) in rows.iter().zip(controls(&json)) {
        assert_eq!(&row[0], "contoso");
        assert_eq!(&row[1], control["id"].as_str().unwrap());
    }
    // Accept: text/csv chooses it too.
    let negotiated = app
        .client
        .get(format!("{}/tenants/contoso/controls", app.address))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(negotiated.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
}

#[tokio::test]
async fn unknown_tenants_and_tenants_without_secure_are_404s() {
    // The default metric is `device`: no tenant has `secure`.
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__HISTORY__ENABLED", "false")],
    )
    .await;
    let (status, _, body) = app.get_json("/tenants/contoso/controls").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "metric_not_enabled");
    let (status, _, body) = app.get_json("/tenants/nobody/controls").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "unknown_tenant");
    let stats = app.emulator.stats().total;
    assert_eq!((stats.graph_calls, stats.control_profile_calls), (0, 0));
    // `/controls` counts no tenant without `secure`.
    let (status, _, list) = app.get_json("/controls").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["tenants"], 0);
    assert_eq!(list["controls"], serde_json::json!([]));
}

#[tokio::test]
async fn with_history_on_each_snapshots_controls_and_the_backfilled_days_reach_the_control_history()
{
    // History on with its controls: the first `secure` fetch back-fills Graph's 90 daily
    // snapshots; their controls, joined with the tenant's profiles, fill 90 days of per-control
    // history.
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[
            ("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#),
            ("SCOREGATE__HISTORY__CONTROLS", "true"),
        ],
    )
    .await;
    let (status, _, body) = app.get_json("/tenants/contoso/controls").await;
    assert_eq!(status, 200, "{body}");
    let newest = OffsetDateTime::parse(body["time"].as_str().unwrap(), &Rfc3339).unwrap();
    let control = ids(&body)[0].clone();
    let from = newest - time::Duration::days(120);
    let route = format!(
        "/tenants/contoso/controls/{control}/history?from={}",
        from.format(&Rfc3339).unwrap()
    );
    // Awaited, not slept on: the back-fill is a task of its own.
    let oldest_kept = newest - time::Duration::days(80);
    let points = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let (status, _, history) = app.get_json(&route).await;
            if status == 200 {
                let points = history["points"].as_array().unwrap().clone();
                let first = points
                    .first()
                    .and_then(|point| point["at"].as_str())
                    .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok());
                if first.is_some_and(|first| first <= oldest_kept) {
                    assert_eq!(history["tenant"], "contoso");
                    assert_eq!(history["control"], control.as_str());
                    return points;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the back-filled days reach the control's history");
    for point in &points {
        assert!(point["score"].is_number(), "{point}");
        assert!(
            point["max_score"].is_number(),
            "joined with the profiles: {point}"
        );
        assert!(point["state"].is_string(), "{point}");
    }
    // One call for the score, three pages of 30 days, and the profiles' pages: nothing more.
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.graph_calls, 4, "{stats:?}");
    assert_eq!(
        stats.control_profile_calls, 2,
        "two pages of profiles: {stats:?}"
    );
}

#[tokio::test]
async fn every_page_of_profiles_is_a_call_charged_to_the_tenants_graph_quota() {
    // Two Graph calls a minute: the score and the first page of profiles. The second page
    // would be the third call: refused by the quota, never sent.
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[
            ("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#),
            ("SCOREGATE__HISTORY__ENABLED", "false"),
            ("SCOREGATE__UPSTREAM__GRAPH_REQUESTS_PER_MINUTE", "2"),
        ],
    )
    .await;
    let (status, headers, body) = app.get_json("/tenants/contoso/controls").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "upstream_throttled");
    assert!(headers.contains_key("retry-after"));
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!((stats.graph_calls, stats.control_profile_calls), (1, 1));
    assert_eq!(stats.graph_responses_429, 0, "{stats:?}");
}
