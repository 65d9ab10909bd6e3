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
        all.contains("cache.stale_if_error_seconds: must be at most 31536000, not 100000000000"),
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
    let _refresher = crate::refresher::Refresher::new(&services, &config.cache, &config.refresh);
    // The limiters are built on first use: use them once.
    let tenant = config.registry.get("a").unwrap();
    let store = crate::quota::LocalQuotaStore::default();
    let key = crate::quota::QuotaKey {
        tenant: tenant.id.clone(),
        service: crate::upstream::UpstreamService::Defender,
    };
    for window in crate::quota::Window::ALL {
        assert!(store
            .charge_window(&key, tenant.limits(key.service), window)
            .is_ok());
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
