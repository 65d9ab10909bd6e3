//! Operations: `/metrics` moving with known traffic, one JSON log line per request, no secret in
//! any log line, graceful stop during slow requests, live reload (add, remove, rotate, refuse).

use crate::helpers::{captured_logs, emulator_options, fault, spawn_app, spawn_app_with, TestApp};
use scoregate::emulator::{EmulatorOptions, FaultProfile, LatencyRange};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One parsed sample: metric name and its labels.
type Key = (String, BTreeMap<String, String>);

/// Parses the Prometheus / OpenMetrics text format into `(name, labels) → value`.
fn parse_metrics(text: &str) -> HashMap<Key, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("closed labels: {line}"));
                (name.to_owned(), parse_labels(body))
            }
        };
        samples.insert((name, labels), value);
    }
    samples
}

/// `a="x",b="y"` (values may contain commas, `{`, `}` and escaped quotes).
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.to_owned(), value);
        rest = after[end..].trim_start_matches(',');
    }
    labels
}

/// The value of `name` with exactly these labels, if present.
fn sample(samples: &HashMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

/// Scrapes `/metrics`, checking the content type, and parses it.
async fn scrape(app: &TestApp) -> HashMap<Key, f64> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse_metrics(&text)
}

#[test]
fn the_test_parser_reads_labels_with_awkward_values() {
    let samples = parse_metrics(
        "# TYPE x counter\nx_total{route=\"/tenants/{id}/score\",method=\"GET\",status=\"200\"} 3\nup 1.5\n# EOF\n",
    );
    assert_eq!(
        sample(
            &samples,
            "x_total",
            &[
                ("route", "/tenants/{id}/score"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(sample(&samples, "up", &[]), Some(1.5));
}

#[tokio::test]
async fn metrics_move_the_right_way_after_known_traffic() {
    let app = spawn_app(emulator_options(
        3,
        vec![fault(FaultProfile::Revoked, &["fabrikam"])],
    ))
    .await;

    let (status, _, first) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200);
    assert_eq!(first["source"], "upstream");
    let (status, _, second) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200);
    assert_eq!(second["source"], "cache");
    let (status, _, revoked) = app.get_json("/tenants/fabrikam/score").await;
    assert_eq!(status, 502, "{revoked}");
    assert_eq!(app.get("/no/such/route").await.status().as_u16(), 404);

    let samples = scrape(&app).await;
    let stats = app.emulator.stats();
    let ok_calls: u64 = stats.tenants.values().map(|c| c.score_calls).sum();
    assert_eq!(ok_calls, 1, "only contoso reached Defender, once");
    assert_eq!(
        sample(
            &samples,
            "scoregate_upstream_calls_total",
            &[("service", "defender"), ("outcome", "ok")]
        ),
        Some(ok_calls as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_upstream_call_duration_seconds_count",
            &[("service", "defender"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_cache_requests_total",
            &[("outcome", "hit")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_cache_requests_total",
            &[("outcome", "miss")]
        ),
        Some(2.0),
        "contoso's first request and fabrikam's"
    );
    assert_eq!(
        sample(&samples, "scoregate_fetches_total", &[("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_fetches_total",
            &[("outcome", "upstream_auth")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_token_requests_total",
            &[("outcome", "rejected")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_http_requests_total",
            &[
                ("route", "/tenants/{id}/score"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_http_requests_total",
            &[
                ("route", "/tenants/{id}/score"),
                ("method", "GET"),
                ("status", "502")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        Some(1.0),
        "raw paths never become labels"
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_tenant_score",
            &[("tenant", "contoso"), ("metric", "device")]
        ),
        first["score"].as_f64()
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_success = sample(
        &samples,
        "scoregate_tenant_last_success_timestamp_seconds",
        &[("tenant", "contoso"), ("metric", "device")],
    )
    .expect("contoso's last success");
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_success),
        "{last_success} vs {now}"
    );
    assert!(
        sample(
            &samples,
            "scoregate_tenant_consecutive_failures",
            &[("tenant", "fabrikam"), ("metric", "device")]
        )
        .expect("fabrikam's failures")
            >= 1.0
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_tenant_consecutive_failures",
            &[("tenant", "contoso"), ("metric", "device")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_tenant_last_success_timestamp_seconds",
            &[("tenant", "fabrikam"), ("metric", "device")]
        ),
        None,
        "never succeeded"
    );
    assert_eq!(sample(&samples, "scoregate_tenants", &[]), Some(3.0));
    assert_eq!(
        sample(&samples, "scoregate_upstream_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&samples, "scoregate_tenants_cooling_down", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_defender_429_is_counted_and_the_tenant_is_cooling_down() {
    let app = spawn_app(emulator_options(
        2,
        vec![fault(FaultProfile::Throttled, &["contoso"])],
    ))
    .await;

    let response = app.get("/tenants/contoso/score").await;
    assert_eq!(response.status().as_u16(), 503);
    let response = app.get("/tenants/contoso/score").await;
    assert_eq!(response.status().as_u16(), 503);

    let samples = scrape(&app).await;
    assert_eq!(app.emulator.stats().tenant("contoso").responses_429, 1);
    assert_eq!(
        sample(
            &samples,
            "scoregate_upstream_throttled_total",
            &[("service", "defender")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "scoregate_upstream_calls_total",
            &[("service", "defender"), ("outcome", "throttled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "scoregate_tenants_cooling_down", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_graph_429_is_counted_and_titled_as_graphs_not_defenders() {
    // `secure` alone, and no history (its back-fill would make a Graph call of its own).
    let app = spawn_app_with(
        emulator_options(2, vec![fault(FaultProfile::Throttled, &["contoso"])]),
        &[
            ("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#),
            ("SCOREGATE__HISTORY__ENABLED", "false"),
        ],
    )
    .await;

    // The 429 itself, then the cool-down it started: both name the service that throttles.
    for path in [
        "/tenants/contoso/score?metric=secure",
        "/tenants/contoso/score?metric=secure&max_age=0",
    ] {
        let (status, _, body) = app.get_json(path).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "upstream_throttled", "{body}");
        assert_eq!(
            body["title"], "Microsoft Graph is throttling this tenant",
            "{body}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("Microsoft Graph is throttling"),
            "{body}"
        );
    }

    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(
        (stats.graph_responses_429, stats.responses_429),
        (1, 0),
        "{stats:?}"
    );
    let samples = scrape(&app).await;
    for (service, expected) in [("graph", 1.0), ("defender", 0.0)] {
        assert_eq!(
            sample(
                &samples,
                "scoregate_upstream_throttled_total",
                &[("service", service)]
            ),
            Some(expected),
            "{service}"
        );
        assert_eq!(
            sample(
                &samples,
                "scoregate_upstream_calls_total",
                &[("service", service), ("outcome", "throttled")]
            ),
            Some(expected),
            "{service}"
        );
    }
}

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_writes_one_json_log_line_with_its_fields() {
    // The gateway's own app, called in-process on this thread, under the JSON subscriber that
    // `--log-format json` installs (the test binary's global subscriber is text).
    let app = spawn_app(emulator_options(2, vec![])).await;
    let config =
        scoregate::config::Config::load_with_env(&app.config_path, app.overrides.clone()).unwrap();
    let services = scoregate::service::Services::build(&config).unwrap();
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = scoregate::telemetry::json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    let guard = tracing::subscriber::set_default(subscriber);
    let service = actix_web::test::init_service(scoregate::api::app(services)).await;
    let request = actix_web::test::TestRequest::get()
        .uri("/tenants/contoso/score")
        .insert_header(("x-request-id", "ops-json-1"))
        .to_request();
    let response = actix_web::test::call_service(&service, request).await;
    assert_eq!(response.status().as_u16(), 200);
    let request = actix_web::test::TestRequest::get()
        .uri("/tenants/nobody/score")
        .insert_header(("x-request-id", "ops-json-2"))
        .to_request();
    let response = actix_web::test::call_service(&service, request).await;
    assert_eq!(response.status().as_u16(), 404);
    drop(guard);

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}")))
        .filter(|line: &serde_json::Value| line["message"] == "request")
        .collect();
    assert_eq!(lines.len(), 2, "one line per request:\n{text}");
    for (line, (id, tenant, status)) in lines.iter().zip([
        ("ops-json-1", "contoso", 200),
        ("ops-json-2", "nobody", 404),
    ]) {
        assert_eq!(line["request_id"], id, "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["route"], "/tenants/{id}/score", "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["tenant"], tenant, "{line}");
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn no_secret_or_token_appears_in_any_log_line_or_the_metrics_under_auth_failures() {
    let app = spawn_app(emulator_options(
        5,
        vec![
            fault(FaultProfile::Revoked, &["fabrikam"]),
            fault(FaultProfile::ExpiredSecret, &["northwind"]),
            fault(FaultProfile::Forbidden, &["litware"]),
            fault(FaultProfile::Unlicensed, &["adatum"]),
        ],
    ))
    .await;
    for slug in ["contoso", "fabrikam", "northwind", "litware", "adatum"] {
        let _ = app.get(&format!("/tenants/{slug}/score")).await;
        let _ = app.get(&format!("/tenants/{slug}/score?max_age=0")).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let logs = captured_logs();
    assert!(
        logs.contains("Defender refused the call"),
        "failures were logged"
    );
    for secret in app.secrets() {
        assert!(!logs.contains(&secret), "a secret in the logs");
        assert!(!metrics.contains(&secret), "a secret in the metrics");
    }
    // Bearer tokens are JWTs: base64url of `{"` starts every one of them.
    assert!(!logs.contains("eyJ"), "a token in the logs");
    assert!(!metrics.contains("eyJ"), "a token in the metrics");
    for tenant in app.emulator.tenants() {
        assert!(
            !metrics.contains(&tenant.client_id.to_string()),
            "client ids stay out of metrics"
        );
    }
}

#[tokio::test]
async fn a_graceful_stop_lets_slow_requests_in_flight_finish() {
    let app = spawn_app(EmulatorOptions {
        slow_latency: LatencyRange {
            min_ms: 700,
            max_ms: 800,
        },
        ..emulator_options(2, vec![fault(FaultProfile::Slow, &["contoso"])])
    })
    .await;
    let client = app.client.clone();
    let url = format!("{}/tenants/contoso/score", app.address);
    let slow = tokio::spawn(async move { client.get(url).send().await });
    // Let the request reach the gateway and the emulator (bounded at 10 s, not 1 s: a loaded
    // machine may take a while to get there).
    for _ in 0..500 {
        if app.emulator.stats().tenant("contoso").in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.emulator.stats().tenant("contoso").in_flight, 1);

    let started = std::time::Instant::now();
    let stop = tokio::spawn(app.server.stop(true));
    let response = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["source"], "upstream");
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("the server stops within the grace period")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // Stopped: new connections are refused.
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed");
}

/// The configuration file without the `[[tenants]]` entry of `slug`.
fn without_tenant(config: &str, slug: &str) -> String {
    let mut out = String::new();
    for (index, block) in config.split("\n[[tenants]]\n").enumerate() {
        if index == 0 {
            out.push_str(block);
        } else if !block.starts_with(&format!("id = \"{slug}\"\n")) {
            out.push_str("\n[[tenants]]\n");
            out.push_str(block);
        }
    }
    out
}

#[tokio::test]
async fn a_reload_adds_and_removes_tenants_and_rotates_secrets_while_traffic_flows() {
    let app = Arc::new(spawn_app(emulator_options(3, vec![])).await);
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    assert!(original.contains("id = \"fabrikam\"\n"), "{original}");
    // fabrikam's score is cached, so that the reload must drop it.
    assert_eq!(
        app.get("/tenants/fabrikam/score").await.status().as_u16(),
        200
    );
    assert_eq!(
        app.get("/tenants/northwind/score").await.status().as_u16(),
        200
    );
    let before = scrape(&app).await;
    assert!(sample(
        &before,
        "scoregate_tenant_score",
        &[("tenant", "fabrikam"), ("metric", "device")]
    )
    .is_some());

    // Concurrent traffic for a tenant that stays throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(app.get("/tenants/contoso/score").await.status().as_u16());
                statuses.push(app.get("/tenants").await.status().as_u16());
            }
            statuses
        })
    };

    // Remove fabrikam.
    std::fs::write(&app.config_path, without_tenant(&original, "fabrikam")).unwrap();
    let summary = app.reloader.reload().await.expect("a valid configuration");
    assert_eq!((summary.tenants, summary.added, summary.removed), (2, 0, 1));
    let response = app.get("/tenants/fabrikam/score").await;
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(app.get("/tenants/fabrikam").await.status().as_u16(), 404);
    let (_, _, list) = app.get_json("/tenants").await;
    assert!(!list.to_string().contains("fabrikam"), "{list}");
    assert!(
        !app.services
            .is_fetching(
                &scoregate::tenants::TenantId::parse("fabrikam").unwrap(),
                scoregate::upstream::Metric::Device
            )
            .await
    );
    let after = scrape(&app).await;
    assert!(
        after
            .keys()
            .all(|(_, labels)| labels.get("tenant").map(String::as_str) != Some("fabrikam")),
        "fabrikam's series are gone"
    );
    assert_eq!(sample(&after, "scoregate_tenants", &[]), Some(2.0));

    // Add it back: it is served again, fetched anew (its cached score was dropped).
    let calls_before = app.emulator.stats().tenant("fabrikam").score_calls;
    std::fs::write(&app.config_path, &original).unwrap();
    let summary = app.reloader.reload().await.expect("a valid configuration");
    assert_eq!((summary.tenants, summary.added, summary.removed), (3, 1, 0));
    let (status, _, body) = app.get_json("/tenants/fabrikam/score").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "upstream");
    assert_eq!(
        app.emulator.stats().tenant("fabrikam").score_calls,
        calls_before + 1
    );

    // Rotate northwind's secret to one Entra refuses: the new credential is used at once…
    let secret_file = app
        .config_path
        .parent()
        .unwrap()
        .join(scoregate::emulator::SECRETS_DIR_NAME)
        .join("northwind.secret");
    let good_secret = std::fs::read_to_string(&secret_file).unwrap();
    std::fs::write(&secret_file, "not-the-secret-any-more").unwrap();
    app.reloader.reload().await.expect("a valid configuration");
    let tokens_before = app.emulator.stats().tenant("northwind").token_requests;
    let response = app.get("/tenants/northwind/score?max_age=0").await;
    assert_eq!(response.status().as_u16(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_auth", "{body}");
    assert_eq!(
        app.emulator.stats().tenant("northwind").token_requests,
        tokens_before + 1,
        "the old credential's cached token was dropped"
    );
    // Rotating back: the good secret is read anew at the next reload.
    std::fs::write(&secret_file, &good_secret).unwrap();
    app.reloader.reload().await.expect("a valid configuration");
    let tokens_before = app.emulator.stats().tenant("fabrikam").token_requests;
    app.reloader.reload().await.expect("a valid configuration");
    let (status, _, body) = app.get_json("/tenants/fabrikam/score?max_age=0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.emulator.stats().tenant("fabrikam").token_requests,
        tokens_before + 1,
        "every reloaded registration gets a new credential"
    );

    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|&status| status == 200),
        "concurrent traffic saw errors: {statuses:?}"
    );
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_old_configuration_serving() {
    let app = spawn_app(emulator_options(2, vec![])).await;
    let original = std::fs::read_to_string(&app.config_path).unwrap();

    for broken in [
        format!("{original}\n[[tenants]]\nid = \"bad id!\"\ntenant_id = \"nope\"\nclient_id = \"nope\"\n"),
        "this is = = not toml".to_owned(),
    ] {
        std::fs::write(&app.config_path, &broken).unwrap();
        let error = app.reloader.reload().await.expect_err("an invalid configuration");
        assert!(!error.to_string().is_empty());
        assert_eq!(app.get("/tenants/contoso/score").await.status().as_u16(), 200);
        assert_eq!(app.get("/tenants/fabrikam/score").await.status().as_u16(), 200);
        assert_eq!(app.services.registry().len(), 2);
    }
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line
            .contains("configuration reload refused, still serving the previous configuration")
            && line.contains("tenants[2]")),
        "the reason is logged on one line"
    );
    let samples = scrape(&app).await;
    assert_eq!(
        sample(
            &samples,
            "scoregate_config_reloads_total",
            &[("outcome", "invalid")]
        ),
        Some(2.0)
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_configuration() {
    let app = spawn_app(emulator_options(2, vec![])).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = scoregate::lifecycle::reload_on_sighup(app.reloader.clone(), shutdown.clone())
        .expect("the SIGHUP listener installs");
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, without_tenant(&original, "fabrikam")).unwrap();

    // Other gateways in this test binary install no SIGHUP listener: only this one reloads.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut removed = false;
    for _ in 0..100 {
        if app.services.registry().get("fabrikam").is_none() {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(removed, "SIGHUP reloaded the file");
    assert_eq!(
        app.get("/tenants/fabrikam/score").await.status().as_u16(),
        404
    );
    assert_eq!(
        app.get("/tenants/contoso/score").await.status().as_u16(),
        200
    );
    shutdown.cancel();
    listener.await.unwrap();
}
