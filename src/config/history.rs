//! `[history]`: the score history's serde type, its checks, and its resolution into the
//! history's own [`HistoryConfig`]: the database URL (a SQLite path made absolute and escaped, or
//! a PostgreSQL URL with its password set in) and the history's limits.

use super::checks::{check_range, wide};
use super::limits;
use super::secret::{read_secret, SecretSource};
use crate::history::HistoryConfig;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::Path;
use url::Url;

/// `[history]`: where every reading is kept, and for how long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Whether readings are recorded and the history routes answer.
    pub enabled: bool,
    /// The database: `sqlite://scoregate.db` (the default; a relative path is resolved against
    /// the directory of this file, and the file and its schema are created at start) or
    /// `postgres://user@host:5432/db` (for several replicas). Secret (it may hold a password):
    /// never logged nor shown; prefer `password` for the password.
    pub url: secrecy::SecretString,
    /// The PostgreSQL password (`{ env = "…" }` or `{ file = "…" }`), set into `url`.
    pub password: Option<SecretSource>,
    /// Days points are kept (default 400, at most 3650); older ones are deleted every hour.
    pub retention_days: u32,
    /// Days alert events and finished (delivered or failed) webhook deliveries are kept
    /// (default: `retention_days`, at most 3650); older ones are deleted every hour. Pending
    /// deliveries and the events they send are kept until they finish.
    pub alerts_retention_days: Option<u32>,
    /// Readings waiting to be written, at most (default 10000): beyond it, while the database
    /// is slow or unreachable, new readings are dropped (and counted), never waited for.
    pub buffer: usize,
    /// Whether each tenant's Secure Score controls are recorded: the per-control history
    /// (`/tenants/{id}/controls/{control}/history`, back-filled with Graph's 90 daily snapshots)
    /// and the `control_regressed` alert rules. Off by default: with thousands of tenants the
    /// back-fill's writes and the profile fetch every tenant then needs were measured to swamp
    /// an embedded SQLite and the gateway's memory (`bench controls --history true`).
    pub controls: bool,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            url: secrecy::SecretString::from("sqlite://scoregate.db"),
            password: None,
            retention_days: 400,
            alerts_retention_days: None,
            buffer: 10_000,
            controls: false,
        }
    }
}

/// `[history]`: retention and buffer within bounds (the URL is checked by [`resolve_history`]).
pub(super) fn validate_history(history: &HistorySettings, problems: &mut Vec<String>) {
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

/// Resolves `[history]` into a [`HistoryConfig`]: a relative SQLite path against `base_dir`
/// (the file is created at start), a PostgreSQL URL with `password` set into it. The URL is
/// never quoted in a problem: it may hold a password.
pub(in crate::config) fn resolve_history(
    history: &HistorySettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> HistoryConfig {
    use secrecy::ExposeSecret;
    let raw = history.url.expose_secret().trim();
    let disabled = HistoryConfig {
        enabled: false,
        url: SecretString::from(String::new()),
        retention_days: history.retention_days,
        alerts_retention_days: history
            .alerts_retention_days
            .unwrap_or(history.retention_days),
        buffer: history.buffer,
        controls: false,
    };
    if !history.enabled {
        return disabled;
    }
    let url = if let Some(rest) = raw.strip_prefix("sqlite:") {
        if history.password.is_some() {
            problems.push("history.password: only a postgres:// url takes a password".to_owned());
        }
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            problems.push(
                "history.url: the SQLite URL names no file (`sqlite://scoregate.db`)".to_owned(),
            );
            return disabled;
        }
        let path = if path == ":memory:" {
            path.to_owned()
        } else {
            base_dir.join(path).to_string_lossy().into_owned()
        };
        // Created on first start: the embedded default needs nothing installed.
        let params = if params.split('&').any(|pair| pair.starts_with("mode=")) {
            params.to_owned()
        } else if params.is_empty() {
            "mode=rwc".to_owned()
        } else {
            format!("{params}&mode=rwc")
        };
        format!("sqlite://{}?{params}", escape_sqlite_path(&path))
    } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        let Ok(mut url) = Url::parse(raw) else {
            problems.push("history.url: not a valid postgres:// URL".to_owned());
            return disabled;
        };
        if url.host_str().is_none_or(str::is_empty) {
            problems.push("history.url: the PostgreSQL URL names no host".to_owned());
        }
        if let Some(source) = &history.password {
            if url.password().is_some() {
                problems.push(
                    "history.password: the url holds a password already; give it in one place"
                        .to_owned(),
                );
            } else if let Some(secret) =
                read_secret(source, "history.password", base_dir, env, problems)
            {
                if url.set_password(Some(secret.expose_secret())).is_err() {
                    problems.push("history.password: the url cannot hold a password".to_owned());
                }
            }
        }
        url.to_string()
    } else {
        problems.push(
            "history.url: must start with sqlite:// (embedded) or postgres:// (several replicas)"
                .to_owned(),
        );
        return disabled;
    };
    HistoryConfig {
        enabled: true,
        url: SecretString::from(url),
        retention_days: history.retention_days,
        alerts_retention_days: history
            .alerts_retention_days
            .unwrap_or(history.retention_days),
        buffer: history.buffer,
        controls: history.controls,
    }
}

/// Percent-encodes what would end or change the path in a `sqlite://` URL (sqlx decodes it).
fn escape_sqlite_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, TENANT};
    use crate::config::Config;

    #[test]
    fn the_history_database_defaults_to_a_sqlite_file_beside_the_config() {
        use secrecy::ExposeSecret;
        let dir = tempdir();
        let base = tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }");
        let path = write(&dir, "a.toml", &base);
        let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
        assert!(config.history.enabled);
        assert_eq!(config.history.retention_days, 400);
        assert_eq!(
            config.history.alerts_retention_days, 400,
            "alerts are kept as long as the history by default"
        );
        let expected = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("scoregate.db").display()
        );
        assert_eq!(config.history.url.expose_secret(), expected);
        let path = write(
            &dir,
            "b.toml",
            &format!("{base}\n[history]\nurl = \"sqlite:///var/lib/scoregate/h.db\"\n"),
        );
        let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
        assert_eq!(
            config.history.url.expose_secret(),
            "sqlite:///var/lib/scoregate/h.db?mode=rwc"
        );
    }

    #[test]
    fn a_postgres_password_is_never_shown() {
        use secrecy::ExposeSecret;
        let dir = tempdir();
        let text = format!(
        "{}\n[history]\nurl = \"postgres://gate@db.example:5432/history\"\npassword = {{ env = \"PGPW\" }}\n",
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
    );
        let path = write(&dir, "a.toml", &text);
        let config =
            Config::load_with_env(&path, env(&[("S", "x"), ("PGPW", "hunter2-pw")])).unwrap();
        assert_eq!(
            config.history.url.expose_secret(),
            "postgres://gate:hunter2-pw@db.example:5432/history"
        );
        for shown in [
            format!("{config:?}"),
            config.summary(),
            config.history.redacted_url(),
        ] {
            assert!(!shown.contains("hunter2-pw"), "{shown}");
        }
        assert!(config
            .summary()
            .contains("history postgres://gate@db.example:5432/history, 400 day(s) kept"));
        // A password inline is kept secret too, and an unknown scheme is refused without
        // quoting the URL.
        let text = format!(
        "{}\n[history]\nurl = \"mysql://u:inline-pw@h/d\"\nretention_days = 0\nalerts_retention_days = 4000\nbuffer = 0\n",
        tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
    );
        let path = write(&dir, "b.toml", &text);
        let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
        for expected in [
            "history.url: must start with sqlite://",
            "history.retention_days: must be greater than 0",
            "history.alerts_retention_days: must be at most 3650, not 4000",
            "history.buffer: must be greater than 0",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert!(!all.contains("inline-pw"), "{all}");
    }
}
