//! Operations: `/metrics` moving with known traffic, and the metrics parser the other
//! `operations_*` modules use. Logs are tested in `operations_logs`, graceful stop and live
//! reload in `operations_reload`.

use crate::helpers::{emulator_options, fault, spawn_app, spawn_app_with, TestApp};
use scoregate::emulator::FaultProfile;
use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

/// One parsed sample: metric name and its labels.
pub(crate) type Key = (String, BTreeMap<String, String>);

/// Parses the Prometheus / OpenMetrics text format into `(name, labels) → value`.
pub(crate) fn parse_metrics(text: &str) -> HashMap<Key, f64> {
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
pub(crate) fn sample(
    samples: &HashMap<Key, f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

/// Scrapes `/metrics` (no `Accept`), checking the content type, and parses it.
pub(crate) async fn scrape(app: &TestApp) -> HashMap<Key, f64> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    // No `Accept`: the Prometheus text format.
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(!text.contains("# EOF"), "{text}");
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
