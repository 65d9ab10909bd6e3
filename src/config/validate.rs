//! Validation of the settings that stand on their own: the bounds of every number
//! ([`limits`]), URLs and scopes, authentication on a public address, and credential files
//! others may read (a warning, not an error). Each problem is one line that starts with its key.
//! Tenants and API keys are checked while `resolve` builds them, with the helpers here.

use super::settings::{
    AuthSettings, CacheSettings, RefreshSettings, ServerSettings, TenantSettings, UpstreamSettings,
};
use crate::tenants::Cloud;
use std::path::Path;
use url::Url;

/// Upper bounds of the numeric settings: beyond them a value is a typo or an attack on the
/// process (moka panics on a time-to-live over 1,000 years, `Instant + Duration` overflows,
/// semaphores panic above `usize::MAX >> 3` permits), so `check-config`, `serve` and reloads
/// refuse it, naming the key. Every limit is far above any sensible setting.
pub mod limits {
    /// Longest `[cache] fresh_seconds` and `stale_if_error_seconds`, and `[refresh]
    /// startup_spread_seconds`: one year.
    pub const MAX_WINDOW_SECONDS: u64 = 365 * 24 * 60 * 60;
    /// Most `[server] workers`.
    pub const MAX_WORKERS: usize = 1_024;
    /// Longest `[server] shutdown_grace_seconds`: ten minutes.
    pub const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 600;
    /// How much longer than `/scores`' longest `timeout_ms` `[server] request_timeout_ms` must
    /// be, so that a fan-out that uses all of its time still answers (and renders) in time.
    pub const REQUEST_TIMEOUT_MARGIN_MS: u64 = 5_000;
    /// Shortest `[server] request_timeout_ms`: `/scores`' longest `timeout_ms` plus the margin.
    pub const MIN_REQUEST_TIMEOUT_MS: u64 =
        crate::fanout::MAX_TIMEOUT_MS.unsigned_abs() + REQUEST_TIMEOUT_MARGIN_MS;
    /// Longest `[server] request_timeout_ms`: ten minutes.
    pub const MAX_REQUEST_TIMEOUT_MS: u64 = 600_000;
    /// Longest `[upstream] timeout_ms` and `attempt_timeout_ms`: five minutes.
    pub const MAX_UPSTREAM_TIMEOUT_MS: u64 = 300_000;
    /// Longest `[upstream] connect_timeout_ms`: one minute.
    pub const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
    /// Most `[upstream] max_retries`.
    pub const MAX_RETRIES: u32 = 10;
    /// Longest `[upstream] retry_base_ms` and `retry_max_ms`: one minute.
    pub const MAX_RETRY_BACKOFF_MS: u64 = 60_000;
    /// Most `[upstream] max_in_flight`.
    pub const MAX_IN_FLIGHT: usize = 10_000;
    /// Least `[upstream] max_body_bytes`: 1 KiB (a Defender score answer is ~150 bytes).
    pub const MIN_BODY_BYTES: usize = 1024;
    /// Most `[upstream] max_body_bytes`: 64 MiB.
    pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
    /// Most calls per tenant per minute (`[upstream]` and per-tenant `requests_per_minute`).
    pub const MAX_UPSTREAM_PER_MINUTE: u32 = 1_000_000;
    /// Most calls per tenant per hour (`[upstream]` and per-tenant `requests_per_hour`).
    pub const MAX_UPSTREAM_PER_HOUR: u32 = 60_000_000;
    /// Most Graph calls per tenant at once (`[upstream]` and per-tenant
    /// `graph_max_concurrent`).
    pub const MAX_GRAPH_CONCURRENT: u32 = 1_000;
    /// Most requests per minute of one API key (`[auth] default_requests_per_minute` and
    /// `[[api_keys]] requests_per_minute`).
    pub const MAX_KEY_PER_MINUTE: u32 = 1_000_000;
    /// Most `[cache] max_entries`.
    pub const MAX_CACHE_ENTRIES: u64 = 10_000_000;
    /// Longest `[cache] min_forced_interval_ms`: one hour.
    pub const MAX_MIN_FORCED_INTERVAL_MS: u64 = 3_600_000;
    /// Most `[refresh] max_concurrent`.
    pub const MAX_REFRESH_CONCURRENT: usize = 1_000;
    /// Longest `[history] retention_days` and `alerts_retention_days`: ten years.
    pub const MAX_RETENTION_DAYS: u64 = 3_650;
    /// Most `[history] buffer`.
    pub const MAX_HISTORY_BUFFER: usize = 1_000_000;
}

/// `[history]`: retention and buffer within bounds (the URL is checked by `resolve`).
pub(super) fn validate_history(
    history: &super::settings::HistorySettings,
    problems: &mut Vec<String>,
) {
    use limits::*;
    check_range(
        "history.retention_days",
        history.retention_days.into(),
        1,
        MAX_RETENTION_DAYS,
        problems,
    );
    if let Some(days) = history.alerts_retention_days {
        check_range(
            "history.alerts_retention_days",
            days.into(),
            1,
            MAX_RETENTION_DAYS,
            problems,
        );
    }
    check_range(
        "history.buffer",
        wide(history.buffer),
        1,
        wide(MAX_HISTORY_BUFFER),
        problems,
    );
}

/// Reports `key` unless `min <= value <= max`.
pub(super) fn check_range(key: &str, value: u64, min: u64, max: u64, problems: &mut Vec<String>) {
    if value < min {
        if min == 1 {
            problems.push(format!("{key}: must be greater than 0"));
        } else {
            problems.push(format!("{key}: must be at least {min}, not {value}"));
        }
    } else if value > max {
        problems.push(format!("{key}: must be at most {max}, not {value}"));
    }
}

/// `usize` settings as `u64` for [`check_range`] (saturating: a `usize` over `u64::MAX` cannot
/// exist on the platforms Rust supports, and would be out of range anyway).
fn wide(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// `[server]`: worker count, shutdown grace, and a request timeout that outlasts `/scores`'
/// longest.
pub(super) fn validate_server(server: &ServerSettings, problems: &mut Vec<String>) {
    use limits::*;
    check_range(
        "server.workers",
        wide(server.workers),
        0,
        wide(MAX_WORKERS),
        problems,
    );
    check_range(
        "server.shutdown_grace_seconds",
        server.shutdown_grace_seconds,
        0,
        MAX_SHUTDOWN_GRACE_SECONDS,
        problems,
    );
    if server.request_timeout_ms < MIN_REQUEST_TIMEOUT_MS {
        problems.push(format!(
            "server.request_timeout_ms: must be at least {MIN_REQUEST_TIMEOUT_MS}, not {}: /scores accepts timeout_ms up to {}, and the request must outlast it by {REQUEST_TIMEOUT_MARGIN_MS} ms",
            server.request_timeout_ms,
            crate::fanout::MAX_TIMEOUT_MS
        ));
    } else {
        check_range(
            "server.request_timeout_ms",
            server.request_timeout_ms,
            MIN_REQUEST_TIMEOUT_MS,
            MAX_REQUEST_TIMEOUT_MS,
            problems,
        );
    }
}

/// `[auth]`: the default key rate, and authentication off only on loopback unless allowed.
pub(super) fn validate_auth(
    auth: &AuthSettings,
    server: &ServerSettings,
    problems: &mut Vec<String>,
) {
    check_range(
        "auth.default_requests_per_minute",
        auth.default_requests_per_minute.into(),
        1,
        limits::MAX_KEY_PER_MINUTE.into(),
        problems,
    );
    // An IPv4-mapped IPv6 loopback (::ffff:127.0.0.1) is loopback too.
    let loopback = server.bind.ip().to_canonical().is_loopback();
    if !auth.enabled && !loopback && !auth.allow_unauthenticated_non_loopback {
        problems.push(format!(
            "auth.enabled: authentication is off but server.bind ({}) is not a loopback address, so anyone who can reach it would read every tenant's score; turn authentication on, bind to 127.0.0.1 or [::1], or set [auth] allow_unauthenticated_non_loopback = true if another layer authenticates callers",
            server.bind
        ));
    }
}

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

/// `[cache]`: the windows and the entry count in range (moka panics on huge windows).
pub(super) fn validate_cache(cache: &CacheSettings, problems: &mut Vec<String>) {
    use limits::*;
    check_range(
        "cache.fresh_seconds",
        cache.fresh_seconds,
        1,
        MAX_WINDOW_SECONDS,
        problems,
    );
    check_range(
        "cache.stale_if_error_seconds",
        cache.stale_if_error_seconds,
        0,
        MAX_WINDOW_SECONDS,
        problems,
    );
    check_range(
        "cache.max_entries",
        cache.max_entries,
        1,
        MAX_CACHE_ENTRIES,
        problems,
    );
    check_range(
        "cache.min_forced_interval_ms",
        cache.min_forced_interval_ms,
        0,
        MAX_MIN_FORCED_INTERVAL_MS,
        problems,
    );
}

/// `[refresh]`: the concurrency and the start-up spread in range.
pub(super) fn validate_refresh(refresh: &RefreshSettings, problems: &mut Vec<String>) {
    use limits::*;
    check_range(
        "refresh.max_concurrent",
        wide(refresh.max_concurrent),
        1,
        wide(MAX_REFRESH_CONCURRENT),
        problems,
    );
    if let Some(spread) = refresh.startup_spread_seconds {
        check_range(
            "refresh.startup_spread_seconds",
            spread,
            0,
            MAX_WINDOW_SECONDS,
            problems,
        );
    }
}

/// Warnings for credential files that group or others may read or write (`mode & 0o077`): the
/// gateway still starts (the operator may have reasons), but says which key and file, never
/// what the file holds.
pub(super) fn loose_file_warnings(tenants: &[TenantSettings], base_dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, settings) in tenants.iter().enumerate() {
        let key = format!("tenants[{index}] (id {:?})", settings.id);
        let secret = settings
            .client_secret
            .as_ref()
            .and_then(|source| source.file.as_ref())
            .map(|file| (format!("{key}.client_secret.file"), file));
        let certificate = settings
            .certificate
            .as_ref()
            .map(|certificate| (format!("{key}.certificate.file"), &certificate.file));
        let password = settings
            .certificate
            .as_ref()
            .and_then(|certificate| certificate.password.as_ref())
            .and_then(|source| source.file.as_ref())
            .map(|file| (format!("{key}.certificate.password.file"), file));
        for (key, file) in [secret, certificate, password].into_iter().flatten() {
            let path = base_dir.join(file);
            if let Some(mode) = loose_mode(&path) {
                warnings.push(format!(
                    "{key}: {} may be read or written by group or others (mode {mode:04o}); make it readable by the gateway's user only (chmod 600)",
                    path.display()
                ));
            }
        }
    }
    warnings
}

/// The file's permission bits when group or others have any access; `None` when only the owner
/// has, when the file cannot be inspected (reading it reports that), or off Unix.
fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Reports `key` unless `metrics` names at least one metric, each once. Unknown names are
/// refused earlier, by deserialization, with the key and the accepted names.
pub(super) fn check_metrics(
    key: &str,
    metrics: &[crate::upstream::Metric],
    problems: &mut Vec<String>,
) {
    if metrics.is_empty() {
        problems.push(format!(
            "{key}: must name at least one metric (device, exposure, secure)"
        ));
    }
    for (position, metric) in metrics.iter().enumerate() {
        if metrics[..position].contains(metric) {
            problems.push(format!("{key}[{position}]: {metric} is listed twice"));
        }
    }
}

/// Reports `key` unless `url` (when set) is an `https://` URL with a host.
pub(super) fn check_https(key: &str, url: Option<&Url>, problems: &mut Vec<String>) {
    if let Some(url) = url {
        if url.scheme() != "https" {
            problems.push(format!(
                "{key}: must be an https:// URL (Entra and Defender are HTTPS only)"
            ));
        } else if url.host().is_none() {
            problems.push(format!("{key}: has no host"));
        }
    }
}

/// Reports `key` unless `scope` is an https resource followed by `/.default`.
pub(super) fn check_scope(key: &str, scope: &str, problems: &mut Vec<String>) {
    let valid = scope
        .strip_suffix("/.default")
        .and_then(|resource| Url::parse(resource).ok())
        .is_some_and(|resource| resource.scheme() == "https");
    if !valid {
        problems.push(format!(
            "{key}: must be an https resource followed by /.default, e.g. https://api.securitycenter.microsoft.com/.default"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::TenantsFile;
    use crate::config::test_support::{
        env, problems, tempdir, tenant, with_key, write, CLIENT, TENANT,
    };
    use crate::config::Config;

    #[test]
    fn the_minimum_forced_interval_defaults_to_five_seconds_and_is_bounded_by_an_hour() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "");
        let config = Config::load_with_env(&path, env(&[])).unwrap();
        assert_eq!(config.cache.min_forced_interval_ms, 5_000);
        let config = Config::load_with_env(
            &path,
            env(&[("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0")]),
        )
        .unwrap();
        assert_eq!(
            config.cache.min_forced_interval_ms, 0,
            "0 disables the floor"
        );
        let path = write(
            &dir,
            "b.toml",
            "[cache]\nmin_forced_interval_ms = 3600001\n",
        );
        let problems = problems(Config::load_with_env(&path, env(&[])));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("cache.min_forced_interval_ms: must be at most 3600000")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_duration_count_and_size_above_its_limit_is_refused_with_its_key() {
        use limits::*;
        let dir = tempdir();
        let text = format!(
            "[server]\nworkers = {}\nshutdown_grace_seconds = {}\nrequest_timeout_ms = {}\n\
             [upstream]\ntimeout_ms = {}\nattempt_timeout_ms = {}\nconnect_timeout_ms = {}\n\
             max_retries = {}\nretry_base_ms = {}\nretry_max_ms = {}\nmax_in_flight = {}\n\
             requests_per_minute = {}\nrequests_per_hour = {}\nmax_body_bytes = {}\n\
             [cache]\nfresh_seconds = {}\nstale_if_error_seconds = 100000000000\nmax_entries = {}\n\
             [refresh]\nmax_concurrent = {}\nstartup_spread_seconds = {}\n{}",
            MAX_WORKERS + 1,
            MAX_SHUTDOWN_GRACE_SECONDS + 1,
            MAX_REQUEST_TIMEOUT_MS + 1,
            MAX_UPSTREAM_TIMEOUT_MS + 1,
            MAX_UPSTREAM_TIMEOUT_MS + 1,
            MAX_CONNECT_TIMEOUT_MS + 1,
            MAX_RETRIES + 1,
            MAX_RETRY_BACKOFF_MS + 1,
            MAX_RETRY_BACKOFF_MS + 1,
            MAX_IN_FLIGHT + 1,
            MAX_UPSTREAM_PER_MINUTE + 1,
            MAX_UPSTREAM_PER_HOUR + 1,
            MAX_BODY_BYTES + 1,
            MAX_WINDOW_SECONDS + 1,
            MAX_CACHE_ENTRIES + 1,
            MAX_REFRESH_CONCURRENT + 1,
            MAX_WINDOW_SECONDS + 1,
            tenant(
                "a",
                TENANT,
                CLIENT,
                &format!(
                    "client_secret = {{ env = \"S\" }}\nrequests_per_minute = {}\nrequests_per_hour = {}",
                    MAX_UPSTREAM_PER_MINUTE + 1,
                    MAX_UPSTREAM_PER_HOUR + 1
                )
            ),
        );
        let text = format!(
            "{}\n[[api_keys]]\nname = \"fast\"\nsha256 = \"{}\"\ntenants = [\"*\"]\nrequests_per_minute = {}\n",
            with_key(&text).replace(
                "enabled = true\n",
                &format!(
                    "enabled = true\ndefault_requests_per_minute = {}\n",
                    MAX_KEY_PER_MINUTE + 1
                )
            ),
            "a".repeat(64),
            MAX_KEY_PER_MINUTE + 1
        );
        let path = write(&dir, "a.toml", &text);
        let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
        for key in [
            "server.workers",
            "server.shutdown_grace_seconds",
            "server.request_timeout_ms",
            "auth.default_requests_per_minute",
            "upstream.timeout_ms",
            "upstream.attempt_timeout_ms",
            "upstream.connect_timeout_ms",
            "upstream.max_retries",
            "upstream.retry_base_ms",
            "upstream.retry_max_ms",
            "upstream.max_in_flight",
            "upstream.requests_per_minute",
            "upstream.requests_per_hour",
            "upstream.max_body_bytes",
            "cache.fresh_seconds",
            "cache.max_entries",
            "refresh.max_concurrent",
            "refresh.startup_spread_seconds",
            "tenants[0] (id \"a\").requests_per_minute",
            "tenants[0] (id \"a\").requests_per_hour",
            "api_keys[1] (name \"fast\").requests_per_minute",
        ] {
            assert!(
                all.contains(&format!("{key}: must be at most ")),
                "missing {key:?} in:\n{all}"
            );
        }
        assert!(
            all.contains(
                "cache.stale_if_error_seconds: must be at most 31536000, not 100000000000"
            ),
            "{all}"
        );
    }

    #[tokio::test]
    async fn the_largest_accepted_values_load_and_build_the_services_without_panicking() {
        use limits::*;
        let dir = tempdir();
        let text = format!(
            "[server]\nworkers = {MAX_WORKERS}\nshutdown_grace_seconds = {MAX_SHUTDOWN_GRACE_SECONDS}\nrequest_timeout_ms = {MAX_REQUEST_TIMEOUT_MS}\n\
             [upstream]\ntimeout_ms = {MAX_UPSTREAM_TIMEOUT_MS}\nattempt_timeout_ms = {MAX_UPSTREAM_TIMEOUT_MS}\n\
             connect_timeout_ms = {MAX_CONNECT_TIMEOUT_MS}\nmax_retries = {MAX_RETRIES}\n\
             retry_base_ms = {MAX_RETRY_BACKOFF_MS}\nretry_max_ms = {MAX_RETRY_BACKOFF_MS}\n\
             max_in_flight = {MAX_IN_FLIGHT}\nrequests_per_minute = {MAX_UPSTREAM_PER_MINUTE}\n\
             requests_per_hour = {MAX_UPSTREAM_PER_HOUR}\nmax_body_bytes = {MAX_BODY_BYTES}\n\
             [cache]\nfresh_seconds = {MAX_WINDOW_SECONDS}\nstale_if_error_seconds = {MAX_WINDOW_SECONDS}\n\
             max_entries = {MAX_CACHE_ENTRIES}\n\
             [refresh]\nmax_concurrent = {MAX_REFRESH_CONCURRENT}\nstartup_spread_seconds = {MAX_WINDOW_SECONDS}\n{}",
            tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
        );
        let text = with_key(&text).replace(
            "enabled = true\n",
            &format!("enabled = true\ndefault_requests_per_minute = {MAX_KEY_PER_MINUTE}\n"),
        );
        let path = write(&dir, "a.toml", &text);
        let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
        let services = crate::service::Services::build(&config).unwrap();
        let _refresher =
            crate::refresher::Refresher::new(&services, &config.cache, &config.refresh);
        // The limiters are built on first use: use them once.
        let tenant = config.registry.get("a").unwrap();
        let store = crate::quota::LocalQuotaStore::default();
        let key = crate::quota::QuotaKey {
            tenant: tenant.id.clone(),
            service: crate::upstream::UpstreamService::Defender,
        };
        for window in crate::quota::Window::ALL {
            assert!(store.charge_window(&key, tenant.quota, window).is_ok());
        }
        let key = config.keys.authenticate("test").unwrap();
        assert!(key.charge().is_ok());
        // What the request path adds to `Instant::now()` stays representable.
        let now = tokio::time::Instant::now();
        for millis in [
            config.server.request_timeout_ms,
            config.upstream.timeout_ms + 500,
            (config.cache.fresh_seconds + config.cache.stale_if_error_seconds) * 1_000,
        ] {
            assert!(now
                .checked_add(std::time::Duration::from_millis(millis))
                .is_some());
        }
    }

    #[test]
    fn the_moka_crashing_stale_window_is_refused_before_anything_is_built() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            "[cache]\nstale_if_error_seconds = 100000000000\n",
        );
        let problems = problems(Config::load_with_env(&path, env(&[])));
        assert_eq!(
            problems,
            ["cache.stale_if_error_seconds: must be at most 31536000, not 100000000000"]
        );
    }

    #[test]
    fn the_request_timeout_must_outlast_the_longest_scores_timeout_by_the_margin() {
        let dir = tempdir();
        let minimum = limits::MIN_REQUEST_TIMEOUT_MS;
        assert_eq!(minimum, 65_000);
        for (value, accepted) in [
            (0, false),
            (60_000, false),
            (minimum - 1, false),
            (minimum, true),
        ] {
            let path = write(
                &dir,
                "a.toml",
                &format!("[server]\nrequest_timeout_ms = {value}\n"),
            );
            let result = Config::load_with_env(&path, env(&[]));
            if accepted {
                assert!(result.is_ok(), "{value}");
            } else {
                let all = problems(result).join("\n");
                assert!(
                    all.contains(&format!(
                        "server.request_timeout_ms: must be at least 65000, not {value}: /scores accepts timeout_ms up to 60000"
                    )),
                    "{all}"
                );
            }
        }
    }

    #[test]
    fn zero_counts_are_refused_where_they_would_stop_the_gateway() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            "[refresh]\nmax_concurrent = 0\n[cache]\nmax_entries = 0\n",
        );
        let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
        assert!(
            all.contains("refresh.max_concurrent: must be greater than 0"),
            "{all}"
        );
        assert!(
            all.contains("cache.max_entries: must be greater than 0"),
            "{all}"
        );
    }

    #[test]
    fn authentication_off_on_a_non_loopback_address_is_refused_unless_allowed() {
        let dir = tempdir();
        for bind in ["0.0.0.0:8080", "192.0.2.10:8080", "[::]:8080"] {
            let path = write(&dir, "a.toml", &format!("[server]\nbind = \"{bind}\"\n"));
            let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
            assert!(
                all.contains(&format!(
                    "auth.enabled: authentication is off but server.bind ({bind}) is not a loopback address"
                )),
                "{all}"
            );
            assert!(
                all.contains("[auth] allow_unauthenticated_non_loopback = true"),
                "{all}"
            );
            let allowed = Config::load_with_env(
                &path,
                env(&[(
                    "SCOREGATE__AUTH__ALLOW_UNAUTHENTICATED_NON_LOOPBACK",
                    "true",
                )]),
            );
            assert!(allowed.is_ok(), "{bind}");
        }
        for bind in [
            "127.0.0.1:8080",
            "127.3.4.5:8080",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            let path = write(&dir, "a.toml", &format!("[server]\nbind = \"{bind}\"\n"));
            assert!(Config::load_with_env(&path, env(&[])).is_ok(), "{bind}");
        }
        // With authentication on, any address is fine.
        let path = write(
            &dir,
            "a.toml",
            &with_key(&format!(
                "[server]\nbind = \"0.0.0.0:8080\"\n{}",
                tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
            )),
        );
        assert!(Config::load_with_env(&path, env(&[("S", "x")])).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_others_may_read_are_named_in_a_warning_without_their_content() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempdir();
        let secret = write(&dir, "loose.secret", "hunter2-loose\n");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let private = write(&dir, "private.secret", "hunter2-private\n");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = [
            tenant(
                "loose",
                TENANT,
                CLIENT,
                "client_secret = { file = \"loose.secret\" }",
            ),
            tenant(
                "private",
                "22222222-2222-4222-8222-222222222222",
                CLIENT,
                "client_secret = { file = \"private.secret\" }",
            ),
        ]
        .concat();
        let path = write(&dir, "a.toml", &text);
        let config = Config::load_with_env(&path, env(&[])).unwrap();
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        let warning = &config.warnings[0];
        assert!(
            warning.starts_with(&format!(
                "tenants[0] (id \"loose\").client_secret.file: {} may be read or written by group or others (mode 0644)",
                secret.display()
            )),
            "{warning}"
        );
        let summary = config.summary();
        assert!(
            summary.contains(&format!("  warning: {warning}")),
            "{summary}"
        );
        assert!(!summary.contains("hunter2"), "{summary}");

        // Certificate files and their password files are checked alike.
        let mut settings: TenantsFile = toml::from_str(&tenant(
            "cert",
            TENANT,
            CLIENT,
            "certificate = { file = \"loose.secret\", password = { file = \"private.secret\" } }",
        ))
        .unwrap();
        let warnings = loose_file_warnings(&settings.tenants, dir.path());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("tenants[0] (id \"cert\").certificate.file: "),
            "{warnings:?}"
        );
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
        settings.tenants[0].id = "cert2".into();
        let warnings = loose_file_warnings(&settings.tenants, dir.path());
        assert!(
            warnings[1].starts_with("tenants[0] (id \"cert2\").certificate.password.file: ")
                && warnings[1].contains("(mode 0640)"),
            "{warnings:?}"
        );
    }
}
