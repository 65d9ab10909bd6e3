//! Upper bounds of the numeric settings: beyond them a value is a typo or an attack on the
//! process (moka panics on a time-to-live over 1,000 years, `Instant + Duration` overflows,
//! semaphores panic above `usize::MAX >> 3` permits), so `check-config`, `serve` and reloads
//! refuse it, naming the key. Every limit is far above any sensible setting.

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

/// Longest `[upstream] control_profiles_refresh_hours`: 30 days (a state an admin set, such as
/// "ignored", should not take longer to show).
pub const MAX_CONTROL_PROFILES_REFRESH_HOURS: u64 = 720;

#[cfg(test)]
mod tests {
    use crate::config::limits;
    use crate::config::test_support::{
        env, problems, tempdir, tenant, with_key, write, CLIENT, TENANT,
    };
    use crate::config::Config;

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
        assert!(
            crate::quota::QuotaStore::charge(&store, &key, tenant.limits(key.service))
                .await
                .is_ok()
        );
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
}
