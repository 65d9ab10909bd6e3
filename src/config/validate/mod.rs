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
mod tests;
