//! The configuration file's serde types: one struct per section, each field documented (these
//! comments are the reference of the file's keys) with its default. Nothing here checks a value
//! (`validate` does) or reads a secret (`resolve` does).

pub use crate::cache::CacheSettings;
use crate::model::Metric;
use crate::tenants::{Cloud, Geo};
pub use crate::upstream::UpstreamSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use url::Url;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener.
    #[serde(default)]
    pub server: ServerSettings,
    /// Caller authentication.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Defaults for every tenant's upstream calls.
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// The score cache.
    #[serde(default)]
    pub cache: CacheSettings,
    /// The background refresher.
    #[serde(default)]
    pub refresh: RefreshSettings,
    /// A second file holding `[[tenants]]` entries (for large or generated tenant lists).
    #[serde(default)]
    pub tenants_file: Option<PathBuf>,
    /// The app registrations.
    #[serde(default)]
    pub tenants: Vec<TenantSettings>,
    /// The callers' API keys.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySettings>,
    /// The score history.
    #[serde(default)]
    pub history: HistorySettings,
    /// Alert rules (`[[alerts]]`).
    #[serde(default)]
    pub alerts: Vec<super::alerts::AlertSettings>,
    /// Endpoints that receive alert events (`[[webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<super::alerts::WebhookSettings>,
    /// Several replicas sharing state through Redis; absent for a single process.
    #[serde(default)]
    pub cluster: Option<super::cluster::ClusterSettings>,
}

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
        }
    }
}

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

/// `[auth]`: caller authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Whether callers must present an API key. Turning it off is for loopback test set-ups;
    /// with it on, at least one `[[api_keys]]` entry is required.
    pub enabled: bool,
    /// Requests per minute of keys that set no `requests_per_minute`.
    pub default_requests_per_minute: u32,
    /// Lets the gateway run with authentication off on an address other than loopback (every
    /// caller that can reach it then sees every tenant). Off by default: such a configuration is
    /// refused.
    pub allow_unauthenticated_non_loopback: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default_requests_per_minute: 600,
            allow_unauthenticated_non_loopback: false,
        }
    }
}

/// One `[[api_keys]]` entry: a caller, the tenants it may see, and its request rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Name for logs and metrics (the key itself is never logged).
    pub name: String,
    /// SHA-256 of the key, 64 hex digits (`scoregate keygen` prints a key and its digest).
    pub sha256: String,
    /// Tenant ids the key may see, or `["*"]` for all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Tags whose tenants the key may see.
    #[serde(default)]
    pub tags: Vec<String>,
    /// May read `/metrics` (which names every tenant); requires `tenants = ["*"]`.
    #[serde(default)]
    pub operator: bool,
    /// Requests per minute (default `auth.default_requests_per_minute`).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// `[refresh]`: the background refresher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSettings {
    /// Whether every tenant is kept warm in the background.
    pub enabled: bool,
    /// Most background fetches running at once (at least 1). The refresher also starts one only
    /// while more than half of `[upstream] max_in_flight` is free, so that interactive requests
    /// never wait for background work.
    pub max_concurrent: usize,
    /// Over how many seconds the first round of refreshes is spread after start-up; by default
    /// the refresh period (three quarters of `[cache] fresh_seconds`).
    pub startup_spread_seconds: Option<u64>,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            // 16 fetches at ~300 ms keep 10,000 tenants inside a 225 s refresh period.
            max_concurrent: 16,
            startup_spread_seconds: None,
        }
    }
}

/// One `[[tenants]]` entry: an app registration in one customer tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// The gateway's URL-safe id (`/tenants/{id}`).
    pub id: String,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Entra tenant id (GUID).
    pub tenant_id: String,
    /// Application (client) id (GUID); the same id in many tenants is a multi-tenant app.
    pub client_id: String,
    /// Client secret, from the environment or a file.
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    /// Certificate credential (PEM or PKCS#12 file).
    #[serde(default)]
    pub certificate: Option<CertificateSource>,
    /// Cloud override.
    #[serde(default)]
    pub cloud: Option<Cloud>,
    /// Geo API host override (commercial cloud only).
    #[serde(default)]
    pub geo: Option<Geo>,
    /// Authority host override.
    #[serde(default)]
    pub authority_host: Option<Url>,
    /// Defender API base override.
    #[serde(default)]
    pub api_base: Option<Url>,
    /// Token scope override (the government clouds' scope is not documented).
    #[serde(default)]
    pub scope: Option<String>,
    /// Labels callers filter on (`?tag=gold`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Per-minute limit override.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Per-hour limit override.
    #[serde(default)]
    pub requests_per_hour: Option<u32>,
    /// The tenant's metrics (default `[upstream] metrics`).
    #[serde(default)]
    pub metrics: Option<Vec<Metric>>,
    /// Microsoft Graph base override.
    #[serde(default)]
    pub graph_base: Option<Url>,
    /// Graph token scope override.
    #[serde(default)]
    pub graph_scope: Option<String>,
    /// Graph per-minute limit override.
    #[serde(default)]
    pub graph_requests_per_minute: Option<u32>,
    /// Graph concurrent-call limit override.
    #[serde(default)]
    pub graph_max_concurrent: Option<u32>,
}

/// Where a secret comes from: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newlines ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A certificate credential file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSource {
    /// PEM (certificate + private key) or PKCS#12 (`.pfx`, `.p12`) file.
    pub file: PathBuf,
    /// Password of a PKCS#12 file.
    #[serde(default)]
    pub password: Option<SecretSource>,
}

/// The tenants file: only `[[tenants]]` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantsFile {
    /// The registrations.
    #[serde(default)]
    pub(super) tenants: Vec<TenantSettings>,
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, TENANT};
    use crate::config::Config;

    #[test]
    fn an_unknown_key_is_named_with_its_path() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "[cache]\nfresh_secs = 3\n");
        let problems = problems(Config::load_with_env(&path, env(&[])));
        assert!(
            problems[0].starts_with("cache.fresh_secs: unknown field `fresh_secs`"),
            "{problems:?}"
        );
        let path = write(&dir, "b.toml", "");
        let problems_env = Config::load_with_env(&path, env(&[("SCOREGATE__CACHE__NOPE", "1")]));
        assert!(format!("{}", problems_env.unwrap_err()).contains("unknown field `nope`"));
    }

    #[test]
    fn unknown_clouds_and_geos_are_named() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "[upstream]\ncloud = \"mars\"\n");
        let error = Config::load_with_env(&path, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("upstream.cloud: unknown variant `mars`"),
            "{error}"
        );
        let path = write(
            &dir,
            "b.toml",
            &tenant(
                "a",
                TENANT,
                CLIENT,
                "client_secret = { env = \"S\" }\ngeo = \"moon\"",
            ),
        );
        let error = Config::load_with_env(&path, env(&[("S", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tenants[0].geo: unknown variant `moon`"),
            "{error}"
        );
    }
}
