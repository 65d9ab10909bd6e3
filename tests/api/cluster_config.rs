//! `[cluster]` at load: a SQLite history with a cluster is refused, and the Redis password never
//! shows in errors, summaries or debug output.

use scoregate::config::Config;

/// Loads `toml` (no tenants needed) with `env`; the error text when it is refused.
fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("scoregate.toml");
    std::fs::write(&path, format!("[auth]\nenabled = false\n{toml}")).expect("writable");
    let env = env
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()));
    Config::load_with_env(&path, env).map_err(|error| error.to_string())
}

#[test]
fn sqlite_history_with_a_cluster_is_refused_naming_both_keys() {
    let error = load("[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n", &[])
        .expect_err("the default SQLite history cannot be shared");
    assert!(error.contains("history.url"), "{error}");
    assert!(error.contains("cluster.redis_url"), "{error}");
    // PostgreSQL, or no history, is fine.
    let postgres = "[history]\nurl = \"postgres://scoregate@db/scoregate\"\n\
                    [cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n";
    assert!(load(postgres, &[]).is_ok());
    let off = "[history]\nenabled = false\n[cluster]\nredis_url = \"rediss://r:6380\"\n";
    assert!(load(off, &[]).is_ok());
}

#[test]
fn the_redis_password_never_shows_in_errors_summaries_or_debug_output() {
    let toml = "[history]\nenabled = false\n\
                [cluster]\nredis_url = \"redis://cache.internal:6379/0\"\n\
                password = { env = \"REDIS_PASSWORD\" }\nreplicas = 3\n";
    let config = load(toml, &[("REDIS_PASSWORD", "hunter2-very-secret")]).expect("valid");
    let cluster = config.cluster.as_ref().expect("[cluster]");
    assert_eq!(cluster.replicas, 3);
    assert_eq!(cluster.redacted_url(), "redis://cache.internal:6379/0");
    for shown in [format!("{config:?}"), config.summary()] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    assert!(config
        .summary()
        .contains("Redis redis://cache.internal:6379/0, 3 replica(s)"));
    let both = "[history]\nenabled = false\n\
                [cluster]\nredis_url = \"redis://:inline-secret@r:6379\"\n\
                password = { env = \"REDIS_PASSWORD\" }\n";
    let error = load(both, &[("REDIS_PASSWORD", "x")]).expect_err("two passwords");
    assert!(error.contains("cluster.password"), "{error}");
    assert!(!error.contains("inline-secret"), "{error}");
    for (bad, key) in [
        ("redis_url = \"http://r:6379\"", "cluster.redis_url"),
        (
            "redis_url = \"redis://r\"\nreplicas = 0",
            "cluster.replicas",
        ),
        (
            "redis_url = \"redis://r\"\nkey_prefix = \"a b\"",
            "cluster.key_prefix",
        ),
    ] {
        let toml = format!("[history]\nenabled = false\n[cluster]\n{bad}\n");
        let error = load(&toml, &[]).expect_err(bad);
        assert!(error.contains(key), "{bad}: {error}");
    }
}
