//! `[cluster]`: the settings of several replicas sharing one Redis, checked and resolved at load
//! into the cluster's own [`ClusterConfig`].
//!
//! The Redis URL may hold a password (or take one from `password = { env | file }`): it is kept
//! as a secret from the moment it is read, never logged, and shown only as
//! [`ClusterConfig::redacted_url`].

use super::secret::SecretSource;
use crate::cluster::ClusterConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// `[cluster]`: several replicas share cache, quota, single flight and leases through Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://host:6379/0` or `rediss://…` (TLS). Secret (it may hold a password): never
    /// logged nor shown; prefer `password` for the password.
    pub redis_url: SecretString,
    /// The Redis password (`{ env = "…" }` or `{ file = "…" }`), set into `redis_url`.
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// Replicas running (default 1, at most 64). While Redis is unavailable each replica allows
    /// itself this share of every tenant's upstream limits, so that together they stay within
    /// them.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Prefix of every Redis key (default `scoregate`): gateways sharing one Redis for
    /// different tenant sets need different prefixes. Letters, digits, `-`, `_`, `.`; at most 64.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Deadline of one Redis command in milliseconds (default 250, 10–10000); a command that
    /// misses it marks Redis unavailable until it answers a ping again.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// How long, in milliseconds, a replica serves a score from its own first-level cache
    /// before asking Redis whether another replica stored a newer one (default 1000, at most
    /// 60000; 0 asks Redis on every look-up).
    #[serde(default = "default_local_ttl_ms")]
    pub local_ttl_ms: u64,
    /// Pause, in milliseconds, between two looks at Redis while another replica fetches the
    /// score this one waits for (default 25, 5–1000).
    #[serde(default = "default_wait_poll_ms")]
    pub wait_poll_ms: u64,
}

fn default_replicas() -> u32 {
    1
}
fn default_key_prefix() -> String {
    "scoregate".to_owned()
}
fn default_command_timeout_ms() -> u64 {
    250
}
fn default_local_ttl_ms() -> u64 {
    1_000
}
fn default_wait_poll_ms() -> u64 {
    25
}

/// Most replicas `[cluster] replicas` accepts.
pub const MAX_REPLICAS: u32 = 64;

/// Checks `[cluster]` and resolves its password; problems are pushed, each naming its key.
/// `history_url` is the `[history] url` in force (`None` when history is off): SQLite cannot be
/// shared by replicas, so it is refused together with `[cluster]`.
pub fn resolve(
    settings: &ClusterSettings,
    history_url: Option<&str>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<ClusterConfig> {
    let before = problems.len();
    if history_url.is_some_and(|url| url.trim_start().starts_with("sqlite:")) {
        problems.push(
            "history.url: an SQLite history cannot be shared by several replicas, and \
             cluster.redis_url is set; use a postgres:// URL for history.url (or \
             history.enabled = false), or remove [cluster] for a single replica"
                .to_owned(),
        );
    }
    if settings.replicas == 0 || settings.replicas > MAX_REPLICAS {
        problems.push(format!(
            "cluster.replicas: must be between 1 and {MAX_REPLICAS}, not {}",
            settings.replicas
        ));
    }
    let prefix_ok = !settings.key_prefix.is_empty()
        && settings.key_prefix.len() <= 64
        && settings
            .key_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !prefix_ok {
        problems.push("cluster.key_prefix: 1 to 64 letters, digits, `-`, `_` or `.`".to_owned());
    }
    for (key, value, min, max) in [
        (
            "cluster.command_timeout_ms",
            settings.command_timeout_ms,
            10,
            10_000,
        ),
        ("cluster.local_ttl_ms", settings.local_ttl_ms, 0, 60_000),
        ("cluster.wait_poll_ms", settings.wait_poll_ms, 5, 1_000),
    ] {
        if !(min..=max).contains(&value) {
            problems.push(format!(
                "{key}: must be between {min} and {max}, not {value}"
            ));
        }
    }
    // The parser's message may quote the URL: never repeat it.
    let Ok(mut url) = url::Url::parse(settings.redis_url.expose_secret().trim()) else {
        problems.push(
            "cluster.redis_url: not a valid URL (`redis://host:6379` or `rediss://host:6380`)"
                .to_owned(),
        );
        return None;
    };
    if !matches!(url.scheme(), "redis" | "rediss") {
        problems.push(format!(
            "cluster.redis_url: the scheme must be redis or rediss, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        problems.push("cluster.redis_url: the URL names no host".to_owned());
    }
    if let Some(source) = &settings.password {
        if url.password().is_some() {
            problems.push(
                "cluster.password: the redis_url holds a password already; give it in one place"
                    .to_owned(),
            );
        } else if let Some(secret) =
            super::secret::read_secret(source, "cluster.password", base_dir, env, problems)
        {
            if url.set_password(Some(secret.expose_secret())).is_err() {
                problems.push("cluster.password: cannot be set into redis_url".to_owned());
            }
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(ClusterConfig {
        url: SecretString::from(url.to_string()),
        replicas: settings.replicas,
        key_prefix: settings.key_prefix.clone(),
        command_timeout: Duration::from_millis(settings.command_timeout_ms),
        local_ttl: Duration::from_millis(settings.local_ttl_ms),
        wait_poll: Duration::from_millis(settings.wait_poll_ms),
    })
}
