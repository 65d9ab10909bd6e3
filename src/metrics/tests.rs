//! The exposition under test: names, closed label sets, series at zero and per-tenant series.

use super::*;
use crate::tenants::Registry;

fn id(text: &str) -> TenantId {
    TenantId::parse(text).unwrap()
}

#[test]
fn the_exposition_names_every_family_with_the_prefix() {
    let metrics = Metrics::new();
    metrics.http_request("/tenants/{id}/score", "GET", 200, Duration::from_millis(3));
    metrics.upstream_call(
        UpstreamService::Graph,
        CallOutcome::Throttled,
        Duration::from_millis(30),
    );
    metrics.cache(CacheResult::Hit);
    metrics.tenant_success(
        &id("contoso"),
        Metric::Device,
        340.0,
        UNIX_EPOCH + Duration::from_secs(100),
    );
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    for line in [
        "scoregate_http_requests_total{route=\"/tenants/{id}/score\",method=\"GET\",status=\"200\"} 1",
        "scoregate_upstream_calls_total{service=\"graph\",outcome=\"throttled\"} 1",
        "scoregate_upstream_calls_total{service=\"defender\",outcome=\"throttled\"} 0",
        "scoregate_upstream_throttled_total{service=\"graph\"} 1",
        "scoregate_upstream_throttled_total{service=\"defender\"} 0",
        "scoregate_cache_requests_total{outcome=\"hit\"} 1",
        "scoregate_tenant_score{tenant=\"contoso\",metric=\"device\"} 340.0",
        "scoregate_tenant_last_success_timestamp_seconds{tenant=\"contoso\",metric=\"device\"} 100.0",
        "scoregate_tenant_consecutive_failures{tenant=\"contoso\",metric=\"device\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("scoregate_http_request_duration_seconds_bucket"));
}

/// A registry with a sample in every kind of family: counters, gauges, a histogram, the
/// per-tenant collector.
fn busy_metrics() -> Metrics {
    let mut metrics = Metrics::new();
    metrics.register_cluster();
    metrics.register_routes(&["/scores"]);
    metrics.http_request("/scores", "GET", 200, Duration::from_millis(3));
    metrics.quota_wait();
    metrics.tenant_success(
        &id("contoso"),
        Metric::Device,
        340.0,
        UNIX_EPOCH + Duration::from_secs(100),
    );
    metrics
}

/// The family a sample line belongs to, by the `# TYPE` lines above it: the sample's name, or
/// the name less a histogram's suffix.
fn families_of_samples(text: &str) -> Vec<(String, Option<String>)> {
    let mut typed = std::collections::BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["#", "TYPE", name, kind] => {
                typed.insert(name.to_string(), kind.to_string());
            }
            ["#", "HELP", name, ..] => {
                helped.insert(name.to_string());
            }
            ["#", ..] => {}
            [sample, ..] => {
                let name = sample.split('{').next().unwrap_or(sample).to_owned();
                let family = ["", "_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|suffix| name.strip_suffix(suffix))
                    .find(|family| typed.contains_key(*family) && helped.contains(*family))
                    .map(str::to_owned);
                samples.push((name, family));
            }
            [] => {}
        }
    }
    samples
}

#[test]
fn the_prometheus_text_names_counters_with_total_and_describes_every_sample() {
    let text = busy_metrics()
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    for line in text.lines().filter(|line| line.ends_with(" counter")) {
        assert!(line.ends_with("_total counter"), "{line}");
    }
    assert!(text
        .contains("# TYPE scoregate_quota_waits_total counter\nscoregate_quota_waits_total 1\n"));
    for (sample, family) in families_of_samples(&text) {
        assert!(
            family.is_some(),
            "{sample} has no # HELP and # TYPE in\n{text}"
        );
    }
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("# UNIT"), "{text}");
    assert!(text.contains("# TYPE scoregate_http_request_duration_seconds histogram"));
    assert!(text.contains("scoregate_tenant_score{tenant=\"contoso\",metric=\"device\"} 340"));
}

#[test]
fn openmetrics_carries_the_same_samples_with_units_and_an_end() {
    let metrics = busy_metrics();
    let open = metrics
        .encode(LiveValues::default(), Format::OpenMetrics)
        .unwrap();
    let prometheus = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE scoregate_quota_waits counter\n"),
        "{open}"
    );
    assert!(open.contains("# UNIT scoregate_http_request_duration_seconds seconds\n"));
    // The same sample names (a histogram's lines come in another order).
    let samples = |text: &str| -> Vec<String> {
        let mut names: Vec<String> = families_of_samples(text)
            .into_iter()
            .map(|(sample, _)| sample)
            .collect();
        names.sort();
        names
    };
    assert_eq!(samples(&open), samples(&prometheus));
}

#[test]
fn methods_outside_the_standard_set_share_one_label() {
    let metrics = Metrics::new();
    for method in ["XA1", "get", "BREW", "GET"] {
        metrics.http_request(UNMATCHED_ROUTE, method, 404, Duration::from_millis(1));
    }
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    assert!(
        text.contains(
            "scoregate_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("method=\"GET\",status=\"404\"} 1"), "{text}");
    assert!(!text.contains("XA1") && !text.contains("BREW"), "{text}");
}

#[test]
fn alerting_series_exist_at_zero_before_any_event() {
    let metrics = Metrics::new();
    metrics.register_routes(&["/scores"]);
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    for line in [
        "scoregate_config_reloads_total{outcome=\"ok\"} 0",
        "scoregate_config_reloads_total{outcome=\"invalid\"} 0",
        "scoregate_upstream_calls_total{service=\"defender\",outcome=\"throttled\"} 0",
        "scoregate_upstream_calls_total{service=\"graph\",outcome=\"throttled\"} 0",
        "scoregate_upstream_throttled_total{service=\"defender\"} 0",
        "scoregate_upstream_throttled_total{service=\"graph\"} 0",
        "scoregate_fetches_total{outcome=\"ok\"} 0",
        "scoregate_fetches_total{outcome=\"upstream_auth\"} 0",
        "scoregate_fetches_total{outcome=\"upstream_error\"} 0",
        "scoregate_fetches_total{outcome=\"upstream_throttled\"} 0",
        "scoregate_fetches_total{outcome=\"upstream_timeout\"} 0",
        "scoregate_fetches_total{outcome=\"internal\"} 0",
        "scoregate_fetches_total{outcome=\"shutting_down\"} 0",
        "scoregate_http_requests_total{route=\"/scores\",method=\"GET\",status=\"502\"} 0",
        "scoregate_history_written_total 0",
        "scoregate_history_dropped_total 0",
        "scoregate_history_failed_batches_total 0",
        "scoregate_history_pending 0",
        "scoregate_history_file_lost 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn a_removed_tenant_loses_its_series_and_others_keep_theirs() {
    let metrics = Metrics::new();
    metrics.tenant_success(&id("contoso"), Metric::Device, 340.0, SystemTime::now());
    metrics.tenant_failure(&id("fabrikam"), Metric::Secure, 3);
    metrics.retain_tenants(&Registry::default());
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    assert!(!text.contains("contoso"), "{text}");
    assert!(!text.contains("fabrikam"), "{text}");
}

#[test]
fn a_tenant_that_only_failed_has_a_failure_series_and_no_score_and_tenants_come_in_order() {
    let metrics = Metrics::new();
    metrics.tenant_failure(&id("fabrikam"), Metric::Device, 2);
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    assert!(
        text.contains(
            "scoregate_tenant_consecutive_failures{tenant=\"fabrikam\",metric=\"device\"} 2"
        ),
        "{text}"
    );
    // No value yet: neither the series nor its family (as an empty `Family` is left out).
    assert!(!text.contains("scoregate_tenant_score"), "{text}");
    assert!(!text.contains("tenant_last_success"), "{text}");

    metrics.tenant_success(&id("contoso"), Metric::Device, 340.0, SystemTime::now());
    metrics.tenant_success(&id("fabrikam"), Metric::Device, 410.0, SystemTime::now());
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    let contoso = text
        .find("scoregate_tenant_score{tenant=\"contoso\"")
        .expect("contoso's score");
    let fabrikam = text
        .find("scoregate_tenant_score{tenant=\"fabrikam\",metric=\"device\"} 410.0")
        .expect("fabrikam's score");
    assert!(contoso < fabrikam, "{text}");
    // A success resets the failures.
    assert!(
        text.contains(
            "scoregate_tenant_consecutive_failures{tenant=\"fabrikam\",metric=\"device\"} 0"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE scoregate_tenant_score gauge").count(),
        1,
        "{text}"
    );
}

#[test]
fn a_metric_the_tenant_no_longer_has_loses_its_series() {
    let metrics = Metrics::new();
    // The test tenant has every metric; a registry whose tenant has only `device` drops
    // the `secure` series and keeps the `device` one.
    let mut tenant =
        crate::policy::testing::registration("tenant-0", crate::policy::testing::DEFENDER_LIMITS);
    tenant.metrics = vec![Metric::Device];
    let id = tenant.id.clone();
    metrics.tenant_success(&id, Metric::Device, 340.0, SystemTime::now());
    metrics.tenant_success(&id, Metric::Secure, 420.0, SystemTime::now());
    metrics.retain_tenants(&Registry::new(vec![tenant]));
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    assert!(
        text.contains("scoregate_tenant_score{tenant=\"tenant-0\",metric=\"device\"} 340.0"),
        "{text}"
    );
    assert!(!text.contains("metric=\"secure\""), "{text}");
}

#[test]
fn a_registered_routes_ok_answers_count_in_the_same_series_as_any_other() {
    let metrics = Metrics::new();
    metrics.register_routes(&["/scores", "/tenants/{id}/score"]);
    // The held series (GET, 200) and the families' (another status, another method).
    for _ in 0..2 {
        metrics.http_request("/scores", "GET", 200, Duration::from_millis(3));
    }
    metrics.http_request("/scores", "GET", 503, Duration::from_millis(3));
    metrics.http_request("/scores", "HEAD", 200, Duration::from_millis(3));
    metrics.cache(CacheResult::Hit);
    metrics.cache(CacheResult::Stale);
    let text = metrics
        .encode(LiveValues::default(), Format::Prometheus)
        .unwrap();
    for line in [
        "scoregate_http_requests_total{route=\"/scores\",method=\"GET\",status=\"200\"} 2",
        "scoregate_http_requests_total{route=\"/scores\",method=\"GET\",status=\"503\"} 1",
        "scoregate_http_requests_total{route=\"/scores\",method=\"HEAD\",status=\"200\"} 1",
        "scoregate_http_requests_total{route=\"/tenants/{id}/score\",method=\"GET\",status=\"200\"} 0",
        "scoregate_http_request_duration_seconds_count{route=\"/scores\",method=\"GET\"} 3",
        "scoregate_cache_requests_total{outcome=\"hit\"} 1",
        "scoregate_cache_requests_total{outcome=\"stale\"} 1",
        "scoregate_cache_requests_total{outcome=\"miss\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}
