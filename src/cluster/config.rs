//! The settings of several replicas sharing one Redis, resolved: defined here beside the code
//! that uses them; `config` checks and resolves `[cluster]` into them.
//!
//! The Redis URL may hold a password: it is kept as a secret from the moment it is read, never
//! logged, and shown only as [`ClusterConfig::redacted_url`].

use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// `[cluster]` resolved: the URL with its password, and the bounds as durations.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The URL to connect to, password included; secret: log [`Self::redacted_url`].
    pub url: SecretString,
    /// Replicas sharing the quota.
    pub replicas: u32,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Deadline of one command.
    pub command_timeout: Duration,
    /// How long a first-level copy is served before Redis is asked for a newer one.
    pub local_ttl: Duration,
    /// Pause between two looks at Redis while another replica fetches.
    pub wait_poll: Duration,
}

impl ClusterConfig {
    /// The URL without user, password or query: scheme, host, port and database.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(self.url.expose_secret()) {
            Ok(parsed) => format!(
                "{}://{}{}{}",
                parsed.scheme(),
                parsed.host_str().unwrap_or_default(),
                parsed
                    .port()
                    .map(|port| format!(":{port}"))
                    .unwrap_or_default(),
                parsed.path()
            ),
            Err(_) => "(unparsable url)".to_owned(),
        }
    }
}
