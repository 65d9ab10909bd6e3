//! The three metrics over real HTTPS against the emulator: each one's shape and source, token
//! audiences, quotas per upstream service, Graph's throttling, the retired Defender API
//! (`upstream_gone`), `metric_not_enabled`, and the fan-out per metric — each proven with the
//! emulator's counters.

use crate::helpers::{emulator_options, fault, spawn_app_with, TestApp};
use scoregate::emulator::FaultProfile;
use serde_json::Value;

/// Every metric for every tenant, as an operator enables them by environment.
const ALL_METRICS: (&str, &str) = (
    "SCOREGATE__UPSTREAM__METRICS",
    r#"["device","exposure","secure"]"#,
);

async fn spawn(
    tenants: usize,
    faults: Vec<scoregate::emulator::FaultAssignment>,
    env: &[(&str, &str)],
) -> TestApp {
    // These tests count every Graph call: the history's `secure` back-fill (one more Graph call
    // per tenant, tested in `history_wiring`) would add calls at a time of its own.
    let mut env = env.to_vec();
    env.push(("SCOREGATE__HISTORY__ENABLED", "false"));
    spawn_app_with(emulator_options(tenants, faults), &env).await
}

async fn text(app: &TestApp, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn each_metric_has_its_shape_its_source_and_one_token_per_audience() {
    let app = spawn(2, vec![], &[ALL_METRICS]).await;

    let (status, headers, device) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["metric"], "device");
    assert!(device["score"].as_f64().is_some(), "{device}");
    for absent in ["max_score", "percentage", "categories", "comparisons"] {
        assert!(device.get(absent).is_none(), "{absent} in {device}");
    }
    assert!(headers.contains_key("age"));

    let (status, _, exposure) = app.get_json("/tenants/contoso/score?metric=exposure").await;
    assert_eq!(status, 200, "{exposure}");
    assert_eq!(exposure["metric"], "exposure");
    let value = exposure["score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&value), "{exposure}");
    assert!(exposure.get("max_score").is_none(), "{exposure}");

    let (status, headers, secure) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 200, "{secure}");
    assert_eq!(secure["metric"], "secure");
    assert_eq!(secure["source"], "upstream");
    assert!(headers
        .get("cache-control")
        .is_some_and(|value| value.to_str().unwrap().starts_with("private, max-age=")));
    let score = secure["score"].as_f64().unwrap();
    let max = secure["max_score"].as_f64().unwrap();
    assert!(max > 0.0 && score <= max, "{secure}");
    let percentage = secure["percentage"].as_f64().unwrap();
    assert!(
        (percentage - (score / max * 100.0)).abs() < 0.01,
        "{secure}"
    );
    let categories = secure["categories"].as_object().unwrap();
    let names: Vec<&str> = categories.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5, "{secure}");
    for name in ["identity", "data", "device", "apps", "infrastructure"] {
        assert!(categories[name].as_f64().is_some(), "{name} in {secure}");
    }
    let sum: f64 = categories.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(
        (sum - score).abs() < 0.1,
        "categories sum to the score: {secure}"
    );
    let comparisons = secure["comparisons"].as_array().unwrap();
    assert!(!comparisons.is_empty(), "{secure}");
    assert!(comparisons[0]["basis"].is_string() && comparisons[0]["average_score"].is_number());

    // Forced again: Graph is called again with the cached Graph token.
    let (status, _, _) = app
        .get_json("/tenants/contoso/score?metric=secure&max_age=0")
        .await;
    assert_eq!(status, 200);
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.score_calls, 1, "{stats:?}");
    assert_eq!(stats.exposure_calls, 1, "{stats:?}");
    assert_eq!(stats.defender_calls, 2, "{stats:?}");
    assert_eq!(stats.graph_calls, 2, "{stats:?}");
    assert_eq!(
        stats.defender_token_requests, 1,
        "one Defender token for both: {stats:?}"
    );
    assert_eq!(
        stats.graph_token_requests, 1,
        "one Graph token, reused: {stats:?}"
    );
    assert_eq!(stats.graph_responses_2xx, 2, "{stats:?}");

    // The tenant shows its metrics and the last fetch of each.
    let (_, _, detail) = app.get_json("/tenants/contoso").await;
    assert_eq!(
        detail["metrics"],
        serde_json::json!(["device", "exposure", "secure"])
    );
    for metric in ["device", "exposure", "secure"] {
        assert_eq!(detail["last_fetches"][metric]["outcome"], "ok", "{detail}");
    }
    assert_eq!(detail["last_fetch"], detail["last_fetches"]["device"]);

    // Per-tenant series carry the metric.
    let (_, _, metrics) = text(&app, "/metrics").await;
    assert!(
        metrics.contains("scoregate_tenant_score{tenant=\"contoso\",metric=\"secure\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_for_the_wrong_audience_is_refused_by_graph_and_answered_upstream_auth() {
    // Defender's scope for Graph calls: Entra issues the token, Graph refuses its audience.
    let app = spawn(
        1,
        vec![],
        &[
            ALL_METRICS,
            (
                "SCOREGATE__UPSTREAM__GRAPH_SCOPE",
                "https://api.securitycenter.microsoft.com/.default",
            ),
        ],
    )
    .await;
    let (status, _, body) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "upstream_auth", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Microsoft Graph answered 401"),
        "{body}"
    );
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(
        stats.graph_calls, 2,
        "one call, one after renewing the token: {stats:?}"
    );
    assert_eq!(stats.graph_responses_4xx, 2, "{stats:?}");
    assert_eq!(stats.graph_token_requests, 0, "{stats:?}");
    // The device score is unaffected.
    let (status, _, _) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn device_and_exposure_share_defenders_quota_and_graph_has_its_own() {
    // One a minute: the second call of either Defender metric must wait for the sliding
    // minute, longer than the fetch's deadline.
    let app = spawn(
        1,
        vec![],
        &[
            ALL_METRICS,
            ("SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE", "1"),
            ("SCOREGATE__UPSTREAM__GRAPH_REQUESTS_PER_MINUTE", "1"),
        ],
    )
    .await;
    let (status, _, _) = app.get_json("/tenants/contoso/score?max_age=0").await;
    assert_eq!(status, 200);
    let (status, headers, body) = app
        .get_json("/tenants/contoso/score?metric=exposure&max_age=0")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "upstream_throttled", "{body}");
    assert!(headers.contains_key("retry-after"));
    // Graph's quota is untouched by Defender's calls, and spent by its own.
    let (status, _, _) = app
        .get_json("/tenants/contoso/score?metric=secure&max_age=0")
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = app
        .get_json("/tenants/contoso/score?metric=secure&max_age=0")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "upstream_throttled", "{body}");
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.score_calls, 1, "{stats:?}");
    assert_eq!(stats.exposure_calls, 0, "refused by the gateway: {stats:?}");
    assert_eq!(stats.responses_429, 0, "{stats:?}");
    assert_eq!(stats.graph_calls, 1, "{stats:?}");
    assert_eq!(stats.graph_responses_429, 0, "{stats:?}");
}

#[tokio::test]
async fn a_graph_429_is_upstream_throttled_with_retry_after_and_its_cool_down_is_honoured() {
    let app = spawn(
        2,
        vec![fault(FaultProfile::Throttled, &["contoso"])],
        &[ALL_METRICS],
    )
    .await;
    let (status, headers, body) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "upstream_throttled", "{body}");
    assert_eq!(body["tenant"], "contoso");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let (status, _, _) = app
        .get_json("/tenants/contoso/score?metric=secure&max_age=0")
        .await;
    assert_eq!(status, 503);
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(
        stats.graph_calls, 1,
        "no call during the cool-down: {stats:?}"
    );
    assert_eq!(stats.graph_responses_429, 1, "{stats:?}");
    // Another tenant's Graph calls are not held back.
    let (status, _, _) = app.get_json("/tenants/fabrikam/score?metric=secure").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_retired_defender_is_upstream_gone_once_per_hour_while_secure_keeps_working() {
    let app = spawn(
        2,
        vec![fault(FaultProfile::Retired, &["contoso"])],
        &[("SCOREGATE__UPSTREAM__METRICS", r#"["device","secure"]"#)],
    )
    .await;
    let (status, headers, body) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "upstream_gone", "{body}");
    assert_eq!(body["tenant"], "contoso");
    assert!(!headers.contains_key("retry-after"));
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("410"), "{detail}");
    assert!(detail.contains("use metric=secure"), "{detail}");
    // Asked again, even forced: the gateway remembers, and Defender is not called.
    let (status, _, again) = app.get_json("/tenants/contoso/score?max_age=0").await;
    assert_eq!(status, 502);
    assert_eq!(again["code"], "upstream_gone");
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(
        stats.score_calls, 1,
        "no retries, no second call: {stats:?}"
    );

    let (status, _, secure) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 200, "{secure}");

    let (_, _, page) = app.get_json("/scores?metric=device").await;
    let item = &page["items"][0];
    assert_eq!(item["tenant"], "contoso");
    assert_eq!(item["status"], "error");
    assert_eq!(item["metric"], "device");
    assert_eq!(item["error"]["code"], "upstream_gone", "{item}");
    assert_eq!(item["error"]["status"], 502);
    let (_, _, page) = app.get_json("/scores?metric=secure").await;
    assert_eq!(page["complete"], true, "{page}");
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);

    let (_, _, detail) = app.get_json("/tenants/contoso").await;
    assert_eq!(
        detail["last_fetches"]["device"]["outcome"], "upstream_gone",
        "{detail}"
    );
    assert_eq!(
        detail["last_fetches"]["secure"]["outcome"], "ok",
        "{detail}"
    );
    let (_, _, metrics) = text(&app, "/metrics").await;
    assert!(
        metrics.contains("scoregate_fetches_total{outcome=\"upstream_gone\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scoregate_upstream_calls_total{service=\"defender\",outcome=\"gone\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_metric_the_tenant_does_not_have_is_not_enabled_and_an_unknown_one_is_a_bad_request() {
    let app = spawn(2, vec![], &[]).await;
    let (status, _, body) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "metric_not_enabled", "{body}");
    assert_eq!(body["tenant"], "contoso");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("its metrics: device"),
        "{body}"
    );

    let (status, _, page) = app.get_json("/scores?metric=secure").await;
    assert_eq!(status, 200);
    assert_eq!(page["complete"], false);
    assert_eq!(page["summary"]["failed"], 2, "{page}");
    for item in page["items"].as_array().unwrap() {
        assert_eq!(item["status"], "error");
        assert_eq!(item["error"]["code"], "metric_not_enabled", "{item}");
        assert_eq!(item["error"]["status"], 404);
    }

    for path in [
        "/tenants/contoso/score?metric=devices",
        "/scores?metric=Device",
        "/scores.csv?metric=",
    ] {
        let (status, _, body) = text(&app, path).await;
        if path.ends_with('=') {
            // An empty value is absent: the default metric.
            assert_eq!(status, 200, "{path}: {body}");
            continue;
        }
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "invalid_request");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("metric must be one of device, exposure, secure"),
            "{body}"
        );
    }
    let stats = app.emulator.stats().total;
    assert_eq!(stats.graph_calls, 0, "{stats:?}");
    assert_eq!(stats.graph_token_requests, 0, "{stats:?}");
}

#[tokio::test]
async fn scores_fan_out_per_metric_with_its_summary_order_csv_columns_and_cursors() {
    let app = spawn(4, vec![], &[ALL_METRICS]).await;
    let (status, _, page) = app.get_json("/scores?metric=secure&sort=-score").await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for item in items {
        assert_eq!(item["metric"], "secure");
        assert!(
            item["max_score"].is_number() && item["categories"]["device"].is_number(),
            "{item}"
        );
    }
    assert_eq!(page["summary"]["max"].as_f64().unwrap(), scores[0]);
    assert_eq!(page["summary"]["min"].as_f64().unwrap(), scores[3]);
    assert_eq!(app.emulator.stats().total.graph_calls, 4);
    assert_eq!(app.emulator.stats().total.graph_token_requests, 4);

    // Exposure sorts numerically too (lower is better: `score` lists the best first).
    let (_, _, page) = app.get_json("/scores?metric=exposure&sort=score").await;
    let exposure: Vec<f64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert!(exposure.windows(2).all(|w| w[0] <= w[1]), "{exposure:?}");
    assert!(page["items"][0].get("max_score").is_none());

    let (status, headers, csv) = text(&app, "/scores.csv?metric=secure&limit=2").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let mut lines = csv.split("\r\n");
    let header = lines.next().unwrap();
    assert!(
        header.ends_with(
            ",error_code,error_detail,metric,max_score,percentage,category_identity,category_data,category_device,category_apps,category_infrastructure,change_1d,change_7d,change_30d,change_90d"
        ),
        "{header}"
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row[11], "secure", "{row:?}");
    assert!(
        row[12].parse::<f64>().is_ok() && row[18].parse::<f64>().is_ok(),
        "{row:?}"
    );

    // A cursor is bound to its metric.
    let (_, _, first) = app.get_json("/scores?metric=secure&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (status, _, next) = app
        .get_json(&format!("/scores?metric=secure&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["items"].as_array().unwrap().len(), 2);
    let (status, _, refused) = app
        .get_json(&format!("/scores?metric=device&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(status, 400, "{refused}");
}

#[tokio::test]
async fn an_answer_over_max_body_bytes_is_dropped_as_it_arrives_and_fails_as_unusable() {
    // 1 KiB: Defender's `{time, score}` fits; a Secure Score snapshot with its controls does not.
    let app = spawn(
        1,
        vec![],
        &[ALL_METRICS, ("SCOREGATE__UPSTREAM__MAX_BODY_BYTES", "1024")],
    )
    .await;
    let (status, _, device) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200, "{device}");

    let (status, _, secure) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 502, "{secure}");
    assert_eq!(secure["code"], "upstream_error", "{secure}");
    let detail = secure["detail"].as_str().unwrap();
    assert!(detail.contains("more than 1024 bytes"), "{detail}");
    // Refused once, not retried: an over-long answer does not get shorter.
    let stats = app.emulator.stats();
    assert_eq!(stats.total.graph_calls, 1);
    // The secure score stays unavailable while the device score is served.
    let (status, _, _) = app.get_json("/tenants/contoso/score?metric=secure").await;
    assert_eq!(status, 502);
    let (status, _, _) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200);
}
