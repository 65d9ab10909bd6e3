//! Resolution of `[history]`: the database URL (a SQLite path made absolute and escaped, or a
//! PostgreSQL URL with its password set in) and the history's limits, into a [`HistoryConfig`].

use super::read_secret;
use crate::config::settings::HistorySettings;
use crate::config::HistoryConfig;
use secrecy::SecretString;
use std::path::Path;
use url::Url;

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
