//! `[upstream]`: the defaults of every tenant's upstream calls. The serde type is the owner's
//! ([`UpstreamSettings`], in `upstream`); here are its checks and the extra CA file it names.

use super::checks::{check_https, check_metrics, check_range, check_scope, wide};
use super::limits;
use crate::tenants::Cloud;
pub use crate::upstream::UpstreamSettings;
use std::path::Path;

/// `[upstream]`: every timeout, retry and rate in range, HTTPS hosts, a valid scope and geo.
pub(super) fn validate_upstream(upstream: &UpstreamSettings, problems: &mut Vec<String>) {
    use limits::*;
    let ranges = [
        (
            "upstream.timeout_ms",
            upstream.timeout_ms,
            1,
            MAX_UPSTREAM_TIMEOUT_MS,
        ),
        (
            "upstream.attempt_timeout_ms",
            upstream.attempt_timeout_ms,
            1,
            MAX_UPSTREAM_TIMEOUT_MS,
        ),
        (
            "upstream.connect_timeout_ms",
            upstream.connect_timeout_ms,
            1,
            MAX_CONNECT_TIMEOUT_MS,
        ),
        (
            "upstream.max_retries",
            upstream.max_retries.into(),
            0,
            MAX_RETRIES.into(),
        ),
        (
            "upstream.retry_base_ms",
            upstream.retry_base_ms,
            0,
            MAX_RETRY_BACKOFF_MS,
        ),
        (
            "upstream.retry_max_ms",
            upstream.retry_max_ms,
            0,
            MAX_RETRY_BACKOFF_MS,
        ),
        (
            "upstream.max_in_flight",
            wide(upstream.max_in_flight),
            1,
            wide(MAX_IN_FLIGHT),
        ),
        (
            "upstream.max_body_bytes",
            wide(upstream.max_body_bytes),
            wide(MIN_BODY_BYTES),
            wide(MAX_BODY_BYTES),
        ),
        (
            "upstream.requests_per_minute",
            upstream.requests_per_minute.into(),
            1,
            MAX_UPSTREAM_PER_MINUTE.into(),
        ),
        (
            "upstream.requests_per_hour",
            upstream.requests_per_hour.into(),
            1,
            MAX_UPSTREAM_PER_HOUR.into(),
        ),
        (
            "upstream.graph_requests_per_minute",
            upstream.graph_requests_per_minute.into(),
            1,
            MAX_UPSTREAM_PER_MINUTE.into(),
        ),
        (
            "upstream.graph_max_concurrent",
            upstream.graph_max_concurrent.into(),
            1,
            MAX_GRAPH_CONCURRENT.into(),
        ),
        (
            "upstream.control_profiles_refresh_hours",
            upstream.control_profiles_refresh_hours,
            1,
            MAX_CONTROL_PROFILES_REFRESH_HOURS,
        ),
    ];
    for (key, value, min, max) in ranges {
        check_range(key, value, min, max, problems);
    }
    if upstream.retry_base_ms > upstream.retry_max_ms {
        problems.push("upstream.retry_base_ms: must not exceed upstream.retry_max_ms".to_owned());
    }
    check_https(
        "upstream.authority_host",
        upstream.authority_host.as_ref(),
        problems,
    );
    check_https("upstream.api_base", upstream.api_base.as_ref(), problems);
    check_https(
        "upstream.graph_base",
        upstream.graph_base.as_ref(),
        problems,
    );
    if let Some(scope) = &upstream.scope {
        check_scope("upstream.scope", scope, problems);
    }
    if let Some(scope) = &upstream.graph_scope {
        check_scope("upstream.graph_scope", scope, problems);
    }
    check_metrics("upstream.metrics", &upstream.metrics, problems);
    if upstream.geo.is_some() && upstream.cloud != Cloud::Commercial {
        problems.push("upstream.geo: geo API hosts exist only in the commercial cloud".to_owned());
    }
}

/// The PEM bytes of `path` when it holds at least one certificate; otherwise a problem under `key`.
pub(super) fn read_extra_ca(path: &Path, problems: &mut Vec<String>, key: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) if reqwest::Certificate::from_pem_bundle(&bytes).is_ok_and(|c| !c.is_empty()) => {
            Some(bytes)
        }
        Ok(_) => {
            problems.push(format!(
                "{key}: {} holds no PEM certificate",
                path.display()
            ));
            None
        }
        Err(error) => {
            problems.push(format!("{key}: cannot read {}: {error}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, TENANT};
    use crate::config::Config;

    #[test]
    fn control_profiles_refresh_hours_defaults_to_a_day_and_is_bounded() {
        let dir = tempdir();
        let base = tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }");
        let path = write(&dir, "ok.toml", &base);
        let config = Config::load_with_env(&path, env(&[("S", "x")]));
        assert_eq!(
            config
                .map(|c| c.upstream.control_profiles_refresh_hours)
                .ok(),
            Some(24)
        );
        for (value, expected) in [
            (
                "0",
                "upstream.control_profiles_refresh_hours: must be greater than 0",
            ),
            ("100000", "upstream.control_profiles_refresh_hours"),
        ] {
            let path = write(
                &dir,
                "bad.toml",
                &format!("[upstream]\ncontrol_profiles_refresh_hours = {value}\n{base}"),
            );
            let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
            assert!(all.contains(expected), "{all}");
        }
    }

    #[test]
    fn custom_clouds_need_hosts_and_https() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            &format!(
                "[upstream]\ncloud = \"custom\"\nauthority_host = \"http://127.0.0.1:1\"\n{}",
                tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
            ),
        );
        let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
        assert!(
            all.contains("upstream.authority_host: must be an https:// URL"),
            "{all}"
        );
        assert!(
            all.contains("cloud \"custom\" needs authority_host and api_base"),
            "{all}"
        );
    }
}
