//! `GET /scores` and the behaviour that protects the upstream, against the emulator: single
//! flight, quotas, 429 cool-downs, stale windows, deadlines, summary, filters, order, paging, CSV,
//! the background refresher and bad queries.

use crate::helpers::{emulator_options, fault, spawn_app, spawn_app_with, TestApp};
use scoregate::emulator::{EmulatorOptions, FaultProfile, LatencyRange};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// GET `path` and expect 200 JSON.
async fn scores(app: &TestApp, path: &str) -> Value {
    let (status, _, body) = app.get_json(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The one item of `/scores?tenant=slug` with extra query `extra`.
async fn item(app: &TestApp, slug: &str, extra: &str) -> Value {
    let body = scores(app, &format!("/scores?tenant={slug}{extra}")).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    body["items"][0].clone()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < within,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_bad_request(app: &TestApp, path: &str) {
    let response = app.get(path).await;
    assert_eq!(response.status().as_u16(), 400, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{path}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request", "{path}: {body}");
    assert_eq!(body["status"], 400);
}

fn slow(min_ms: u64, max_ms: u64) -> Option<LatencyRange> {
    Some(LatencyRange { min_ms, max_ms })
}

#[tokio::test]
async fn two_hundred_concurrent_requests_for_one_cold_tenant_make_one_defender_call() {
    let options = EmulatorOptions {
        latency: slow(100, 150),
        ..emulator_options(2, vec![])
    };
    let app = spawn_app(options).await;
    let requests = (0..200).map(|i| {
        let path = if i % 2 == 0 {
            "/scores?tenant=contoso".to_owned()
        } else {
            "/tenants/contoso/score".to_owned()
        };
        let app = &app;
        async move { app.get(&path).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.score_calls, 1);
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.max_concurrent, 1);
    assert_eq!(app.emulator.stats().tenant("fabrikam").score_calls, 0);
}

#[tokio::test]
async fn a_burst_of_forced_fetches_never_exceeds_the_tenants_quota() {
    let options = EmulatorOptions {
        quota_per_minute: Some(5),
        ..emulator_options(1, vec![])
    };
    let app = spawn_app_with(
        options,
        &[("SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE", "5")],
    )
    .await;
    let mut refused = 0;
    // Each round makes two fetches at least (one for the burst, one for `/scores`): four rounds
    // ask for more than the sliding minute's five calls.
    for _ in 0..4 {
        let burst = (0..10).map(|_| app.get("/tenants/contoso/score?max_age=0"));
        for response in futures::future::join_all(burst).await {
            match response.status().as_u16() {
                200 => {}
                503 => refused += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        let body = scores(&app, "/scores?max_age=0").await;
        assert_eq!(body["summary"]["tenants"], 1);
    }
    let stats = app.emulator.stats().tenant("contoso");
    assert!(
        refused > 0,
        "the gateway refused itself once the quota was spent"
    );
    assert!(stats.score_calls <= 5, "{stats:?}");
    assert_eq!(
        stats.quota_refusals, 0,
        "Defender never had to refuse: {stats:?}"
    );
    assert_eq!(stats.responses_429, 0);
}

#[tokio::test]
async fn after_a_defender_429_nothing_is_sent_before_retry_after() {
    let options = EmulatorOptions {
        throttled_retry_after_seconds: 1,
        ..emulator_options(2, vec![fault(FaultProfile::Throttled, &["contoso"])])
    };
    let app = spawn_app(options).await;
    // Before the 429 arrives: the cool-down runs from a later instant.
    let asked = Instant::now();
    let first = item(&app, "contoso", "").await;
    assert_eq!(first["status"], "error");
    assert_eq!(first["error"]["code"], "upstream_throttled");
    assert_eq!(first["error"]["status"], 503);
    app.emulator.set_fault("contoso", None).unwrap();
    // Throttled answers until the cool-down ends (however many fit in it), then the tenant is
    // called again: never sooner, whatever the machine's speed.
    let ok = loop {
        let again = item(&app, "contoso", "&max_age=0").await;
        if again["status"] == "ok" {
            break again;
        }
        assert_eq!(again["error"]["code"], "upstream_throttled", "{again}");
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the tenant is never called again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ok["source"], "upstream");
    assert!(
        asked.elapsed() >= Duration::from_millis(700),
        "called again during the cool-down"
    );
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.score_calls, 2, "nothing is sent during the cool-down");
    assert_eq!(stats.responses_429, 1);
}

#[tokio::test]
async fn an_expired_score_is_served_stale_while_one_refresh_runs() {
    let options = EmulatorOptions {
        latency: slow(200, 250),
        ..emulator_options(1, vec![])
    };
    let app = spawn_app_with(options, &[("SCOREGATE__CACHE__FRESH_SECONDS", "1")]).await;
    let first = item(&app, "contoso", "").await;
    assert_eq!(first["status"], "ok");
    assert_eq!(first["source"], "upstream");
    let stale = eventually(Duration::from_secs(3), || async {
        let item = item(&app, "contoso", "").await;
        (item["status"] == "stale").then_some(item)
    })
    .await;
    assert_eq!(stale["source"], "stale");
    assert_eq!(stale["score"], first["score"]);
    assert!(stale.get("warning").is_none(), "{stale}");
    // Many callers during the refresh: all served at once, one refresh only.
    let burst = (0..20).map(|_| item(&app, "contoso", ""));
    for item in futures::future::join_all(burst).await {
        assert!(
            item["status"] == "stale" || item["status"] == "ok",
            "{item}"
        );
    }
    let fresh = eventually(Duration::from_secs(3), || async {
        let item = item(&app, "contoso", "").await;
        (item["source"] == "cache").then_some(item)
    })
    .await;
    assert_eq!(fresh["status"], "ok");
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 2);
}

#[tokio::test]
async fn a_failed_refresh_serves_the_last_good_score_with_a_warning() {
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__CACHE__FRESH_SECONDS", "1")],
    )
    .await;
    let first = item(&app, "contoso", "").await;
    assert_eq!(first["status"], "ok");
    app.emulator
        .set_fault("contoso", Some(FaultProfile::Malformed))
        .unwrap();
    let warned = eventually(Duration::from_secs(4), || async {
        let item = item(&app, "contoso", "").await;
        item.get("warning").is_some().then_some(item)
    })
    .await;
    assert_eq!(warned["status"], "stale");
    assert_eq!(warned["source"], "stale");
    assert_eq!(warned["score"], first["score"]);
    assert_eq!(warned["warning"]["code"], "upstream_error");
    assert!(!warned["warning"]["detail"].as_str().unwrap().is_empty());
    let body = scores(&app, "/scores").await;
    assert_eq!(body["complete"], false);
    assert_eq!(body["summary"]["stale"], 1);
    assert_eq!(body["summary"]["min"], first["score"]);
    // The single-tenant route documents the same.
    let (status, _, one) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200);
    assert_eq!(one["source"], "stale");
    assert_eq!(one["warning"]["code"], "upstream_error");
}

#[tokio::test]
async fn a_slow_tenant_does_not_delay_the_answer_past_timeout_ms_and_later_lands_in_the_cache() {
    let options = EmulatorOptions {
        slow_latency: LatencyRange {
            min_ms: 1200,
            max_ms: 1300,
        },
        ..emulator_options(4, vec![fault(FaultProfile::Slow, &["contoso"])])
    };
    let app = spawn_app(options).await;
    let body = scores(&app, "/scores?timeout_ms=400").await;
    // Answered while the slow tenant's call is still open (the emulator holds it 1.2 s, three
    // times the deadline): the answer did not wait for it. Asserted on the call, not a clock.
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(
        stats.in_flight, 1,
        "answered after the slow call: {stats:?}"
    );
    assert_eq!(body["complete"], false);
    assert_eq!(body["summary"]["tenants"], 4);
    assert_eq!(body["summary"]["failed"], 1);
    assert_eq!(body["summary"]["ok"], 3);
    let slow = &body["items"][0];
    assert_eq!(slow["tenant"], "contoso");
    assert_eq!(slow["status"], "error");
    assert_eq!(slow["error"]["code"], "deadline_exceeded");
    assert_eq!(slow["error"]["status"], 504);
    let landed = eventually(Duration::from_secs(4), || async {
        let item = item(&app, "contoso", "&timeout_ms=50").await;
        (item["status"] == "ok").then_some(item)
    })
    .await;
    // Served by the fetch the first answer started (joined or cached), not by a new one.
    assert!(
        landed["source"] == "cache" || landed["source"] == "upstream",
        "{landed}"
    );
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
}

#[tokio::test]
async fn the_summary_filters_order_and_pages_are_right() {
    let app = spawn_app(emulator_options(
        7,
        vec![fault(FaultProfile::Forbidden, &["litware"])],
    ))
    .await;
    let all = scores(&app, "/scores").await;
    let items = all["items"].as_array().unwrap();
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["tenant"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sorted by tenant id by default");
    assert_eq!(ids.len(), 7);
    assert_eq!(all["complete"], false);
    assert!(all["next_cursor"].is_null());
    let litware = items.iter().find(|i| i["tenant"] == "litware").unwrap();
    assert_eq!(litware["status"], "error");
    assert_eq!(litware["error"]["code"], "upstream_auth");
    assert_eq!(litware["error"]["status"], 502);
    assert!(litware.get("score").is_none());

    // Summary, computed here from the items.
    let mut values: Vec<f64> = items.iter().filter_map(|i| i["score"].as_f64()).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values.len(), 6);
    let summary = &all["summary"];
    assert_eq!(summary["tenants"], 7);
    assert_eq!(summary["ok"], 6);
    assert_eq!(summary["stale"], 0);
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["min"].as_f64(), Some(values[0]));
    assert_eq!(summary["max"].as_f64(), Some(values[5]));
    // Derived statistics are rounded to 6 decimals by the gateway: compare them the same way.
    let rounded = |value: f64| (value * 1e6).round() / 1e6;
    assert_eq!(
        summary["median"].as_f64(),
        Some(rounded((values[2] + values[3]) / 2.0))
    );
    let mean = values.iter().sum::<f64>() / 6.0;
    assert_eq!(summary["mean"].as_f64(), Some(rounded(mean)));

    // Order by score, both ways; the error is last either way.
    for (sort, ascending) in [("score", true), ("-score", false)] {
        let body = scores(&app, &format!("/scores?sort={sort}")).await;
        let order: Vec<&Value> = body["items"].as_array().unwrap().iter().collect();
        assert_eq!(order.last().unwrap()["tenant"], "litware", "{sort}");
        let got: Vec<f64> = order.iter().filter_map(|i| i["score"].as_f64()).collect();
        let mut want = values.clone();
        if !ascending {
            want.reverse();
        }
        assert_eq!(got, want, "{sort}");
    }

    // Filters: tenants, tags, status; the summary covers what matches.
    let body = scores(&app, "/scores?tenant=fabrikam&tenant=contoso&tenant=nobody").await;
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["contoso", "fabrikam"]);
    assert_eq!(body["summary"]["tenants"], 2);
    assert_eq!(body["complete"], true);
    let tenants = app.get_json("/tenants?tag=gold").await.2;
    let gold: BTreeSet<String> = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!gold.is_empty());
    let body = scores(&app, "/scores?tag=gold").await;
    let got: BTreeSet<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tenant"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, gold);
    let body = scores(&app, "/scores?status=error").await;
    assert_eq!(body["summary"]["tenants"], 1);
    assert_eq!(body["items"][0]["tenant"], "litware");
    assert!(body["summary"]["mean"].is_null());

    // Paging: every tenant exactly once, in order, in every sort; the summary on every page.
    for sort in ["tenant", "name", "score", "-score"] {
        let whole = scores(&app, &format!("/scores?sort={sort}")).await;
        let want: Vec<String> = whole["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["tenant"].as_str().unwrap().to_owned())
            .collect();
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let path = match &cursor {
                Some(c) => format!("/scores?sort={sort}&limit=3&cursor={c}"),
                None => format!("/scores?sort={sort}&limit=3"),
            };
            let page = scores(&app, &path).await;
            assert_eq!(page["summary"]["tenants"], 7);
            assert!(page["items"].as_array().unwrap().len() <= 3);
            got.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["tenant"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(got, want, "{sort}");
    }
    // Seven calls in all: the cache served everything else.
    assert_eq!(app.emulator.stats().total.score_calls, 7);
}

#[tokio::test]
async fn scores_come_as_rfc_4180_csv_when_asked() {
    let app = spawn_app(emulator_options(
        3,
        vec![fault(FaultProfile::Forbidden, &["northwind"])],
    ))
    .await;
    let response = app.get("/scores?format=csv").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let body = response.text().await.unwrap();
    assert!(body.ends_with("\r\n"));
    let lines: Vec<&str> = body.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "tenant,name,tags,status,score,time,fetched_at,age_seconds,source,error_code,error_detail,\
         metric,max_score,percentage,category_identity,category_data,category_device,category_apps,\
         category_infrastructure,change_1d,change_7d,change_30d,change_90d"
    );
    assert_eq!(
        lines.len(),
        5,
        "header, three rows, and the empty rest: {body:?}"
    );
    assert!(lines[1].starts_with("contoso,"), "{body}");
    assert!(lines[1].contains(",ok,"), "{body}");
    assert!(lines[3].starts_with("northwind,"), "{body}");
    assert!(lines[3].contains(",error,"), "{body}");
    assert!(lines[3].contains("upstream_auth"), "{body}");

    let response = app
        .client
        .get(format!("{}/scores", app.address))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(response.text().await.unwrap().starts_with("tenant,name,"));
}

#[tokio::test]
async fn bad_query_values_are_400_problems() {
    let app = spawn_app(emulator_options(3, vec![])).await;
    let page = scores(&app, "/scores?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for path in [
        "/scores?limit=0".to_owned(),
        "/scores?limit=100000".to_owned(),
        "/scores?limit=ten".to_owned(),
        "/scores?sort=size".to_owned(),
        "/scores?status=fine".to_owned(),
        "/scores?format=xml".to_owned(),
        "/scores?cursor=garbage".to_owned(),
        format!("/scores?limit=1&cursor={tampered}"),
        format!("/scores?limit=1&sort=name&cursor={cursor}"),
        "/scores?max_age=-1".to_owned(),
        "/scores?timeout_ms=0".to_owned(),
        "/scores?timeout_ms=-5".to_owned(),
        "/scores?timeout_ms=60001".to_owned(),
        "/scores?colour=blue".to_owned(),
    ] {
        assert_bad_request(&app, &path).await;
    }
    // The real cursor works.
    let next = scores(&app, &format!("/scores?limit=1&cursor={cursor}")).await;
    assert_eq!(next["items"][0]["tenant"], "fabrikam");
    let response = app
        .client
        .post(format!("{}/scores", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn the_refresher_warms_every_tenant() {
    // Its spread, its budget and its restraint behind interactive requests are proven under a
    // paused clock by the unit tests of `refresher`; this proves it runs in the real gateway.
    let app = spawn_app_with(
        emulator_options(5, vec![]),
        &[
            ("SCOREGATE__REFRESH__ENABLED", "true"),
            ("SCOREGATE__REFRESH__STARTUP_SPREAD_SECONDS", "1"),
        ],
    )
    .await;
    // No request is made until every tenant was called: these calls are the refresher's.
    eventually(Duration::from_secs(10), || async {
        (app.emulator.stats().total.score_calls >= 5).then_some(())
    })
    .await;
    let body = eventually(Duration::from_secs(10), || async {
        let body = scores(&app, "/scores").await;
        let all_cached = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["source"] == "cache");
        all_cached.then_some(body)
    })
    .await;
    assert_eq!(body["summary"]["ok"], 5);
    let stats = app.emulator.stats();
    for (slug, counters) in &stats.tenants {
        assert_eq!(counters.score_calls, 1, "{slug}");
    }
}
