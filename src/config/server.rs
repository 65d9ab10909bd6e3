//! `[server]`: the HTTP listener's serde type, its checks, and the cursor secret it names.

use super::checks::{check_range, wide};
use super::limits;
use super::secret::{read_secret, SecretSource};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to listen on; changing it needs a restart.
    pub bind: SocketAddr,
    /// Actix worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Seconds requests in flight may take to finish after SIGTERM or SIGINT before the server
    /// closes their connections; changing it needs a restart.
    pub shutdown_grace_seconds: u64,
    /// Longest a request may take, in milliseconds, before it is answered 504 `deadline_exceeded`.
    pub request_timeout_ms: u64,
    /// Secret every cursor (`/scores`, alert routes) is encrypted with (`{ env = "…" }` or
    /// `{ file = "…" }`, at least 32 characters); give every replica the same one. Without it
    /// each process uses a random key, and cursors do not survive a restart nor work on another
    /// replica. Changing it needs a restart.
    pub cursor_key: Option<SecretSource>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            // Above /scores' longest `timeout_ms` (60 s), so that a slow fan-out still answers 200.
            request_timeout_ms: 75_000,
            shutdown_grace_seconds: 30,
            cursor_key: None,
        }
    }
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

/// Shortest accepted `server.cursor_key`, in bytes: about 192 bits of a base64 secret.
const MIN_CURSOR_KEY_BYTES: usize = 32;

/// Reads `server.cursor_key`, when set, and refuses a short one.
pub(super) fn resolve_cursor_key(
    server: &ServerSettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    use secrecy::ExposeSecret;
    let key = "server.cursor_key";
    let secret = read_secret(server.cursor_key.as_ref()?, key, base_dir, env, problems)?;
    if secret.expose_secret().len() < MIN_CURSOR_KEY_BYTES {
        problems.push(format!(
            "{key}: at least {MIN_CURSOR_KEY_BYTES} characters are needed (`openssl rand -base64 32` makes one)"
        ));
        return None;
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use crate::config::limits;
    use crate::config::test_support::{env, problems, tempdir, write};
    use crate::config::Config;

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
}
