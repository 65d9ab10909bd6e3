//! `/metrics` in its two formats: the Prometheus text format (0.0.4) by default, for `text/plain`
//! and `*/*`, and OpenMetrics only for a scraper that names it (Prometheus does).

use crate::helpers::{emulator_options, spawn_app, TestApp};
use std::collections::BTreeSet;

/// Prometheus 2's scrape `Accept`: OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Content type, `Vary` and body of a scrape with `accept` (none if `None`).
async fn scrape(app: &TestApp, accept: Option<&str>) -> (String, String, String) {
    let mut request = app.client.get(format!("{}/metrics", app.address));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (content_type, vary) = (header("content-type"), header("vary"));
    (content_type, vary, response.text().await.unwrap())
}

/// A gateway that has answered a score, so that every kind of family has samples (counters,
/// gauges, histograms and the per-tenant series).
async fn busy_app() -> TestApp {
    let app = spawn_app(emulator_options(2, vec![])).await;
    let (status, _, _) = app.get_json("/scores").await;
    assert_eq!(status, 200);
    app
}

/// Names after `# TYPE` of the families whose type is `kind`.
fn families(text: &str, kind: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, type_)| *type_ == kind)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The metric name of every sample line.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or(line).to_owned())
        .collect()
}

#[tokio::test]
async fn a_scrape_that_does_not_ask_for_openmetrics_gets_the_prometheus_text_format() {
    let app = busy_app().await;
    for accept in [None, Some("*/*"), Some("text/plain; version=0.0.4")] {
        let (content_type, vary, text) = scrape(&app, accept).await;
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert_eq!(vary, "Accept");
        assert!(!text.contains("# EOF"), "{accept:?}: {text}");
        assert!(!text.contains("# UNIT"), "{accept:?}: {text}");
        let counters = families(&text, "counter");
        assert!(counters.contains("scoregate_http_requests_total"), "{text}");
        for counter in &counters {
            assert!(counter.ends_with("_total"), "{counter}");
        }
        // Every sample belongs to a family with its # HELP and # TYPE (a histogram's by its
        // suffixed lines).
        let typed: BTreeSet<String> = ["counter", "gauge", "histogram"]
            .iter()
            .flat_map(|kind| families(&text, kind))
            .collect();
        for sample in sample_names(&text) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    sample
                        .strip_suffix(suffix)
                        .filter(|family| typed.contains(*family))
                })
                .unwrap_or(&sample);
            assert!(typed.contains(family), "{sample} has no # TYPE");
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no # HELP"
            );
        }
        assert!(
            text.contains("scoregate_tenant_score{tenant=\"contoso\",metric=\"device\"}"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn prometheus_asking_for_openmetrics_gets_openmetrics_with_the_same_samples() {
    let app = busy_app().await;
    let (content_type, vary, open) = scrape(&app, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(vary, "Accept");
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# UNIT scoregate_http_request_duration_seconds seconds\n"));
    // OpenMetrics names the counter family without `_total`, its samples with it.
    let counters = families(&open, "counter");
    assert!(counters.contains("scoregate_http_requests"), "{open}");
    for counter in &counters {
        assert!(!counter.ends_with("_total"), "{counter}");
    }
    assert!(open.contains("\nscoregate_http_requests_total{"), "{open}");

    let (_, _, text) = scrape(&app, None).await;
    assert_eq!(sample_names(&open), sample_names(&text));
}
