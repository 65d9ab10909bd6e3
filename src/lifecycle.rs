//! The process lifecycle: graceful shutdown on SIGTERM or SIGINT, live reload on SIGHUP.
//!
//! Owns the signal listeners and the reload procedure (load the same file with the same
//! environment overrides, validate, hand the result to [`Services::reload`], log the outcome).
//! It does not decide what a reload swaps — that is [`Services::reload`] — nor how the HTTP
//! server drains: actix does that within `[server] shutdown_grace_seconds` once the shutdown
//! token is cancelled (see [`crate::app::Application`]).
//!
//! Listeners are installed only by `serve` (and by the tests that ask for them), never by
//! [`crate::app::Application::build`]: a process hosting several gateways (the tests) must not
//! have every one of them react to a signal meant for another.

use crate::config::{Config, ConfigError, ServerSettings, UpstreamSettings};
use crate::service::{ReloadSummary, Services};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Reloads the configuration into running services.
#[derive(Clone)]
pub struct Reloader {
    /// The services whose registry is swapped.
    services: Arc<Services>,
    /// The file the gateway was started from.
    path: PathBuf,
    /// The `SCOREGATE__…` overrides, when not the process environment's (tests pass their own).
    env: Option<Vec<(String, String)>>,
    /// What was in force at start-up among the settings a reload cannot change, to warn when the
    /// file now says otherwise.
    restart_only: RestartOnly,
}

/// Settings a reload cannot change: the listener, the shared HTTPS client, the cache and the
/// cursor codec were built from them once.
#[derive(Debug, Clone)]
struct RestartOnly {
    server: (std::net::SocketAddr, usize, u64),
    /// Compared, never shown: `SecretString`'s `Debug` is redacted and the warning names only the
    /// setting.
    cursor_key: Option<SecretString>,
    upstream: (u64, u64, u64, u32, u64, u64, usize),
    extra_ca_pem: Option<Vec<u8>>,
    cache: (u64, u64, u64, u64),
    refresh: String,
}

impl RestartOnly {
    fn of(config: &Config) -> Self {
        let ServerSettings {
            bind,
            workers,
            shutdown_grace_seconds,
            ..
        } = &config.server;
        let UpstreamSettings {
            timeout_ms,
            attempt_timeout_ms,
            connect_timeout_ms,
            max_retries,
            retry_base_ms,
            retry_max_ms,
            max_in_flight,
            ..
        } = &config.upstream;
        Self {
            server: (*bind, *workers, *shutdown_grace_seconds),
            cursor_key: config.cursor_key.clone(),
            upstream: (
                *timeout_ms,
                *attempt_timeout_ms,
                *connect_timeout_ms,
                *max_retries,
                *retry_base_ms,
                *retry_max_ms,
                *max_in_flight,
            ),
            extra_ca_pem: config.extra_ca_pem.clone(),
            cache: (
                config.cache.fresh_seconds,
                config.cache.stale_if_error_seconds,
                config.cache.max_entries,
                config.cache.min_forced_interval_ms,
            ),
            // Settings types without secrets: their Debug form is a faithful fingerprint.
            refresh: format!("{:?}", config.refresh),
        }
    }

    /// The sections whose restart-only settings differ.
    fn differences(&self, other: &Self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.server != other.server {
            changed.push("[server]");
        }
        let same_cursor_key = match (&self.cursor_key, &other.cursor_key) {
            (None, None) => true,
            (Some(old), Some(new)) => old.expose_secret() == new.expose_secret(),
            _ => false,
        };
        if !same_cursor_key {
            changed.push("[server] cursor_key");
        }
        if self.upstream != other.upstream {
            changed.push("[upstream] timeouts, retries or max_in_flight");
        }
        if self.extra_ca_pem != other.extra_ca_pem {
            changed.push("[upstream] extra_ca_file");
        }
        if self.cache != other.cache {
            changed.push("[cache]");
        }
        if self.refresh != other.refresh {
            changed.push("[refresh]");
        }
        changed
    }
}

impl Reloader {
    /// A reloader of `config`'s file into `services`, applying the process environment's
    /// overrides at each reload (as `serve` does at start-up).
    pub fn new(services: Arc<Services>, config: &Config) -> Self {
        Self {
            services,
            path: config.path.clone(),
            env: None,
            restart_only: RestartOnly::of(config),
        }
    }

    /// Uses these overrides instead of the process environment (the tests' `load_with_env`).
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = Some(env);
        self
    }

    /// Re-reads and validates the file; if it is valid, swaps it in, else keeps the running
    /// configuration. Either way the outcome is logged on one line and counted.
    pub async fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        let path = self.path.clone();
        let env = self.env.clone();
        // Loading reads files (the configuration, secret files, certificates): off the runtime.
        let loaded = tokio::task::spawn_blocking(move || match env {
            Some(env) => Config::load_with_env(&path, env),
            None => Config::load(&path),
        })
        .await;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => Err(ConfigError::Read {
                path: self.path.clone(),
                source: std::io::Error::other(format!("the loading task failed: {error}")),
            }),
        };
        match loaded {
            Ok(config) => {
                let summary = self.services.reload(&config).await;
                self.services
                    .metrics()
                    .reload(crate::metrics::ReloadOutcome::Ok);
                tracing::info!(
                    path = %self.path.display(),
                    tenants = summary.tenants,
                    added = summary.added,
                    removed = summary.removed,
                    "configuration reloaded"
                );
                let ignored = self.restart_only.differences(&RestartOnly::of(&config));
                if !ignored.is_empty() {
                    tracing::warn!(
                        "configuration reload: changes to {} take effect only after a restart",
                        ignored.join(", ")
                    );
                }
                Ok(summary)
            }
            Err(error) => {
                self.services
                    .metrics()
                    .reload(crate::metrics::ReloadOutcome::Invalid);
                // One line: the validation report lists its problems on separate lines.
                let why = crate::telemetry::error_chain(&error).replace("\n  - ", "; ");
                tracing::error!(
                    path = %self.path.display(),
                    "configuration reload refused, still serving the previous configuration: {why}"
                );
                Err(error)
            }
        }
    }
}

/// Reloads with `reloader` on every SIGHUP until `shutdown` is cancelled.
///
/// Installing the listener replaces SIGHUP's default action (terminate) for the whole process.
#[cfg(unix)]
pub fn reload_on_sighup(
    reloader: Reloader,
    shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received: reloading the configuration");
                    // The outcome is logged by `reload`.
                    let _ = reloader.reload().await;
                }
            }
        }
    }))
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT: the server stops accepting connections,
/// finishes the requests in flight within the grace period, and the refresher stops.
#[cfg(unix)]
pub fn stop_on_signals(shutdown: CancellationToken) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: no new connections, finishing requests in flight"
        );
        shutdown.cancel();
    }))
}

/// Without Unix signals there is no reload signal; reload through [`Reloader::reload`].
#[cfg(not(unix))]
pub fn reload_on_sighup(
    _reloader: Reloader,
    _shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    Ok(tokio::spawn(async {}))
}

/// Cancels `shutdown` on Ctrl-C.
#[cfg(not(unix))]
pub fn stop_on_signals(shutdown: CancellationToken) -> std::io::Result<JoinHandle<()>> {
    Ok(tokio::spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::info!(signal = "ctrl-c", "stopping: no new connections, finishing requests in flight");
                shutdown.cancel();
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k3y-0f-the-cursors-k3y-0f-the-cursors-0001";
    const OTHER_KEY: &str = "k3y-0f-the-cursors-k3y-0f-the-cursors-0002";

    /// The restart-only settings of a configuration file with `text`, and `K` set to `key`.
    fn restart_only(text: &str, key: &str) -> RestartOnly {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scoregate.toml");
        std::fs::write(&path, text).unwrap();
        let env = [
            ("K", key),
            ("SCOREGATE__AUTH__ENABLED", "false"),
            ("SCOREGATE__SERVER__BIND", "127.0.0.1:0"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        let config = Config::load_with_env(&path, env.to_vec()).unwrap();
        RestartOnly::of(&config)
    }

    #[test]
    fn a_changed_added_or_removed_cursor_key_needs_a_restart_and_is_never_shown() {
        let with_key = "[server]\ncursor_key = { env = \"K\" }\n";
        let running = restart_only(with_key, KEY);
        assert!(running.differences(&restart_only(with_key, KEY)).is_empty());
        for (text, key) in [(with_key, OTHER_KEY), ("", KEY)] {
            assert_eq!(
                running.differences(&restart_only(text, key)),
                ["[server] cursor_key"]
            );
        }
        assert_eq!(
            restart_only("", KEY).differences(&running),
            ["[server] cursor_key"]
        );
        let shown = format!("{running:?}");
        assert!(!shown.contains(KEY), "{shown}");
    }

    #[test]
    fn a_changed_minimum_forced_interval_needs_a_restart() {
        let running = restart_only("", KEY);
        let changed = restart_only("[cache]\nmin_forced_interval_ms = 100\n", KEY);
        assert_eq!(running.differences(&changed), ["[cache]"]);
    }
}
