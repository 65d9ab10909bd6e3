//! Configuration: typed settings from a TOML file plus `SCOREGATE__SECTION__KEY` environment
//! overrides, validated at load into a [`Config`] whose tenants are ready to use.
//!
//! Every problem found is reported at once, each naming its key (and the tenant), so that an
//! operator fixes a file in one pass. Secrets are read here (from the environment or files) and
//! wrapped at once; no error message ever quotes one. Relative paths are resolved against the
//! directory of the file that names them.

use crate::auth::{ApiKey, KeyRing, Scope};
use crate::credential::{Certificate, Credential};
use crate::tenants::{Cloud, Geo, QuotaLimits, Registry, Tenant, TenantId};
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use url::Url;

/// Prefix of environment variables that override file settings (`SCOREGATE__CACHE__FRESH_SECONDS`).
pub const ENV_PREFIX: &str = "SCOREGATE__";

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
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            // Above /scores' longest `timeout_ms` (60 s), so that a slow fan-out still answers 200.
            request_timeout_ms: 75_000,
            shutdown_grace_seconds: 30,
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
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default_requests_per_minute: 600,
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

/// `[upstream]`: defaults for every tenant's calls to Entra ID and Defender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Cloud of tenants that name none.
    pub cloud: Cloud,
    /// Geo API host for commercial tenants that name none.
    pub geo: Option<Geo>,
    /// Authority host, required for `cloud = "custom"`, overriding the cloud's otherwise.
    pub authority_host: Option<Url>,
    /// Defender API base, required for `cloud = "custom"`, overriding the cloud's otherwise.
    pub api_base: Option<Url>,
    /// Token scope; default `https://api.securitycenter.microsoft.com/.default`.
    pub scope: Option<String>,
    /// Deadline of one fetch, token and retries included, in milliseconds.
    pub timeout_ms: u64,
    /// Deadline of one HTTP attempt, in milliseconds (bounded by what is left of `timeout_ms`).
    pub attempt_timeout_ms: u64,
    /// TCP + TLS connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Retries of a transient failure (5xx, transport, timeout) within the deadline.
    pub max_retries: u32,
    /// First retry back-off in milliseconds; doubles each retry, with full jitter.
    pub retry_base_ms: u64,
    /// Longest single retry back-off in milliseconds.
    pub retry_max_ms: u64,
    /// Upstream calls in flight at once, over all tenants.
    pub max_in_flight: usize,
    /// PEM file of extra CA certificates to trust (the emulator's, a corporate TLS proxy's).
    pub extra_ca_file: Option<PathBuf>,
    /// Calls per tenant per minute (Microsoft's limit: 100).
    pub requests_per_minute: u32,
    /// Calls per tenant per hour (Microsoft's limit: 1,500).
    pub requests_per_hour: u32,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            cloud: Cloud::Commercial,
            geo: None,
            authority_host: None,
            api_base: None,
            scope: None,
            timeout_ms: 10_000,
            attempt_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            max_retries: 2,
            retry_base_ms: 200,
            retry_max_ms: 2_000,
            max_in_flight: 64,
            extra_ca_file: None,
            requests_per_minute: 100,
            requests_per_hour: 1_500,
        }
    }
}

/// `[cache]`: how long scores are served without asking Defender again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Seconds a score is fresh (served as `cache`); Defender recomputes about once a day.
    pub fresh_seconds: u64,
    /// Seconds past freshness that the last good score may still be served when Defender fails.
    pub stale_if_error_seconds: u64,
    /// Most tenants' scores kept at once.
    pub max_entries: u64,
    /// Shortest interval, in milliseconds, between two fetches of one tenant forced by callers
    /// (`max_age` shorter than this, e.g. `max_age=0`): within it they are served the value last
    /// fetched. `0` disables the floor; at most one hour.
    pub min_forced_interval_ms: u64,
}

/// Largest `[cache] min_forced_interval_ms`: one hour.
pub const MAX_MIN_FORCED_INTERVAL_MS: u64 = 3_600_000;

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            fresh_seconds: 300,
            stale_if_error_seconds: 86_400,
            max_entries: 100_000,
            // A few seconds: a loop on `max_age=0` costs at most 12 calls a minute, while a
            // caller who really wants a new reading waits no longer than that.
            min_forced_interval_ms: 5_000,
        }
    }
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
struct TenantsFile {
    #[serde(default)]
    tenants: Vec<TenantSettings>,
}

/// A configuration that loaded and validated: settings plus the resolved registry.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[upstream]`.
    pub upstream: UpstreamSettings,
    /// `[cache]`.
    pub cache: CacheSettings,
    /// `[refresh]`.
    pub refresh: RefreshSettings,
    /// Extra trusted CA certificates (PEM), read from `upstream.extra_ca_file`.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Every registration, resolved.
    pub registry: Arc<Registry>,
    /// The callers' keys.
    pub keys: Arc<KeyRing>,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but some values are wrong; each problem names its key.
    #[error("{path}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, starting with the key.
        problems: Vec<String>,
    },
}

impl Config {
    /// Loads `path` with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads `path`, applying `SCOREGATE__…` overrides from `env` (tests pass their own).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut table = read_toml(path)?;
        apply_env_overrides(&mut table, &env);
        let settings: Settings = deserialize(path, table)?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let mut tenants = settings.tenants;
        let mut sources = vec![(path.to_path_buf(), "tenants".to_owned()); tenants.len()];
        if let Some(file) = &settings.tenants_file {
            let file = base_dir.join(file);
            let extra: TenantsFile = deserialize(&file, read_toml(&file)?)?;
            sources.extend(vec![
                (file.clone(), "tenants".to_owned());
                extra.tenants.len()
            ]);
            tenants.extend(extra.tenants);
        }
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut problems = Vec::new();
        let upstream = settings.upstream;
        validate_upstream(&upstream, &mut problems);
        if settings.server.request_timeout_ms == 0 {
            problems.push("server.request_timeout_ms: must be greater than 0".to_owned());
        }
        validate_cache(&settings.cache, &mut problems);
        let extra_ca_pem = upstream.extra_ca_file.as_ref().and_then(|file| {
            read_extra_ca(
                &base_dir.join(file),
                &mut problems,
                "upstream.extra_ca_file",
            )
        });
        let resolved = resolve_tenants(&tenants, &upstream, base_dir, &lookup, &mut problems);
        let keys = resolve_keys(&settings.api_keys, &settings.auth, &resolved, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            server: settings.server,
            auth: settings.auth,
            upstream,
            cache: settings.cache,
            refresh: settings.refresh,
            extra_ca_pem,
            registry: Arc::new(Registry::new(resolved)),
            keys: Arc::new(keys),
        })
    }

    /// A short, secret-free summary: counts of tenants per cloud and per credential kind.
    pub fn summary(&self) -> String {
        let mut per_cloud: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
        let mut apps = HashSet::new();
        for tenant in self.registry.all() {
            *per_cloud.entry(tenant.cloud.as_str()).or_default() += 1;
            *per_kind.entry(tenant.credential.kind()).or_default() += 1;
            apps.insert(tenant.client_id.as_str());
        }
        let mut out = format!(
            "{}: OK, {} tenant(s), {} app registration(s)\n",
            self.path.display(),
            self.registry.len(),
            apps.len()
        );
        for (cloud, count) in per_cloud {
            let _ = writeln!(out, "  cloud {cloud}: {count}");
        }
        for (kind, count) in per_kind {
            let _ = writeln!(out, "  credential {kind}: {count}");
        }
        let _ = writeln!(
            out,
            "  listen {}, authentication {}, {} API key(s)",
            self.server.bind,
            if self.auth.enabled { "on" } else { "OFF" },
            self.keys.len()
        );
        out
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_owned(),
        })
}

/// Deserializes with the failing key's path in the message (`tenants[2].client_secret`).
fn deserialize<T: serde::de::DeserializeOwned>(
    path: &Path,
    table: toml::Table,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
        let key = error.path().to_string();
        // toml appends "in `section`" on a second line; the path already says where.
        let inner = error.into_inner().to_string();
        let message = inner.lines().next().unwrap_or_default().to_owned();
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![format!("{key}: {message}")],
        }
    })
}

/// Applies `SCOREGATE__SECTION__KEY=value`: the value is read as a TOML value when it is one
/// (`false`, `300`, `["a"]`), otherwise as a string (`0.0.0.0:8080`).
fn apply_env_overrides(table: &mut toml::Table, env: &[(String, String)]) {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut parsed| parsed.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        set_path(table, &keys, value);
    }
}

/// Sets `keys` (a path of nested tables) to `value`, creating or replacing tables on the way.
fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    match keys {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let Some(next) = entry.as_table_mut() {
                set_path(next, rest, value);
            }
        }
    }
}

fn validate_upstream(upstream: &UpstreamSettings, problems: &mut Vec<String>) {
    let positive = [
        ("upstream.timeout_ms", upstream.timeout_ms),
        ("upstream.attempt_timeout_ms", upstream.attempt_timeout_ms),
        ("upstream.connect_timeout_ms", upstream.connect_timeout_ms),
        ("upstream.max_in_flight", upstream.max_in_flight as u64),
        (
            "upstream.requests_per_minute",
            upstream.requests_per_minute.into(),
        ),
        (
            "upstream.requests_per_hour",
            upstream.requests_per_hour.into(),
        ),
    ];
    for (key, value) in positive {
        if value == 0 {
            problems.push(format!("{key}: must be greater than 0"));
        }
    }
    if upstream.retry_base_ms > upstream.retry_max_ms {
        problems.push("upstream.retry_base_ms: must not exceed upstream.retry_max_ms".to_owned());
    }
    check_https(
        "upstream.authority_host",
        upstream.authority_host.as_ref(),
        problems,
    );
    check_https("upstream.api_base", upstream.api_base.as_ref(), problems);
    if let Some(scope) = &upstream.scope {
        check_scope("upstream.scope", scope, problems);
    }
    if upstream.geo.is_some() && upstream.cloud != Cloud::Commercial {
        problems.push("upstream.geo: geo API hosts exist only in the commercial cloud".to_owned());
    }
}

fn validate_cache(cache: &CacheSettings, problems: &mut Vec<String>) {
    if cache.fresh_seconds == 0 {
        problems.push("cache.fresh_seconds: must be greater than 0".to_owned());
    }
    if cache.max_entries == 0 {
        problems.push("cache.max_entries: must be greater than 0".to_owned());
    }
    validate_min_forced_interval(cache, problems);
}

fn validate_min_forced_interval(cache: &CacheSettings, problems: &mut Vec<String>) {
    if cache.min_forced_interval_ms > MAX_MIN_FORCED_INTERVAL_MS {
        problems.push(format!(
            "cache.min_forced_interval_ms: must be at most {MAX_MIN_FORCED_INTERVAL_MS} (one hour), not {}",
            cache.min_forced_interval_ms
        ));
    }
}

fn check_https(key: &str, url: Option<&Url>, problems: &mut Vec<String>) {
    if let Some(url) = url {
        if url.scheme() != "https" {
            problems.push(format!(
                "{key}: must be an https:// URL (Entra and Defender are HTTPS only)"
            ));
        } else if url.host().is_none() {
            problems.push(format!("{key}: has no host"));
        }
    }
}

fn check_scope(key: &str, scope: &str, problems: &mut Vec<String>) {
    let valid = scope
        .strip_suffix("/.default")
        .and_then(|resource| Url::parse(resource).ok())
        .is_some_and(|resource| resource.scheme() == "https");
    if !valid {
        problems.push(format!(
            "{key}: must be an https resource followed by /.default, e.g. https://api.securitycenter.microsoft.com/.default"
        ));
    }
}

fn read_extra_ca(path: &Path, problems: &mut Vec<String>, key: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) if reqwest::Certificate::from_pem_bundle(&bytes).is_ok_and(|c| !c.is_empty()) => {
            Some(bytes)
        }
        Ok(_) => {
            problems.push(format!(
                "{key}: {} holds no PEM certificate",
                path.display()
            ));
            None
        }
        Err(error) => {
            problems.push(format!("{key}: cannot read {}: {error}", path.display()));
            None
        }
    }
}

fn is_guid(value: &str) -> bool {
    value.len() == 36 && uuid::Uuid::parse_str(value).is_ok()
}

fn resolve_tenants(
    tenants: &[TenantSettings],
    upstream: &UpstreamSettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<Tenant> {
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    let mut seen_apps: HashMap<(String, String), usize> = HashMap::new();
    let mut resolved = Vec::with_capacity(tenants.len());
    for (index, settings) in tenants.iter().enumerate() {
        let key = format!("tenants[{index}] (id {:?})", settings.id);
        let before = problems.len();
        let id = match TenantId::parse(&settings.id) {
            Ok(id) => Some(id),
            Err(error) => {
                problems.push(format!("{key}.id: {error}"));
                None
            }
        };
        if let Some(first) = seen_ids.insert(settings.id.clone(), index) {
            problems.push(format!("{key}.id: duplicates tenants[{first}]"));
        }
        for (field, value) in [
            ("tenant_id", &settings.tenant_id),
            ("client_id", &settings.client_id),
        ] {
            if !is_guid(value) {
                problems.push(format!(
                    "{key}.{field}: {value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                ));
            }
        }
        let app = (
            settings.tenant_id.to_ascii_lowercase(),
            settings.client_id.to_ascii_lowercase(),
        );
        if let Some(first) = seen_apps.insert(app, index) {
            problems.push(format!(
                "{key}: same tenant_id and client_id as tenants[{first}]; Microsoft counts limits per app and tenant, so register it once"
            ));
        }
        for (position, tag) in settings.tags.iter().enumerate() {
            if TenantId::parse(tag).is_err() {
                problems.push(format!(
                    "{key}.tags[{position}]: {tag:?} is not URL-safe (a-z, 0-9, '-', '_', '.')"
                ));
            }
        }
        let credential = resolve_credential(settings, &key, base_dir, env, problems);
        let endpoints = resolve_endpoints(settings, upstream, &key, problems);
        let quota = QuotaLimits {
            per_minute: settings
                .requests_per_minute
                .unwrap_or(upstream.requests_per_minute),
            per_hour: settings
                .requests_per_hour
                .unwrap_or(upstream.requests_per_hour),
        };
        if quota.per_minute == 0 || quota.per_hour == 0 {
            problems.push(format!(
                "{key}.requests_per_minute/requests_per_hour: must be greater than 0"
            ));
        }
        if problems.len() != before {
            continue;
        }
        let (Some(id), Some(credential), Some((cloud, geo, authority_host, api_base, scope))) =
            (id, credential, endpoints)
        else {
            continue;
        };
        resolved.push(Tenant {
            name: settings.name.clone().unwrap_or_else(|| id.to_string()),
            id,
            tenant_id: settings.tenant_id.to_ascii_lowercase(),
            client_id: settings.client_id.to_ascii_lowercase(),
            credential,
            cloud,
            geo,
            authority_host,
            api_base,
            scope,
            tags: settings.tags.clone(),
            quota,
        });
    }
    resolved
}

fn resolve_keys(
    keys: &[ApiKeySettings],
    auth: &AuthSettings,
    tenants: &[Tenant],
    problems: &mut Vec<String>,
) -> KeyRing {
    if auth.enabled && keys.is_empty() {
        problems.push(
            "auth.enabled: authentication is on but no [[api_keys]] are configured; add a key (`scoregate keygen` prints one) or set [auth] enabled = false on a loopback-only set-up"
                .to_owned(),
        );
    }
    if auth.default_requests_per_minute == 0 {
        problems.push("auth.default_requests_per_minute: must be greater than 0".to_owned());
    }
    let known: HashSet<&str> = tenants.iter().map(|tenant| tenant.id.as_str()).collect();
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    let mut ring = Vec::new();
    for (index, settings) in keys.iter().enumerate() {
        let key = format!("api_keys[{index}] (name {:?})", settings.name);
        let before = problems.len();
        if settings.name.trim().is_empty() {
            problems.push(format!("{key}.name: must not be empty"));
        }
        if !names.insert(settings.name.as_str()) {
            problems.push(format!("{key}.name: another key has this name"));
        }
        let digest = settings.sha256.to_ascii_lowercase();
        if !digests.insert(digest.clone()) {
            problems.push(format!("{key}.sha256: another key has this digest"));
        }
        let all = settings.tenants.iter().any(|id| id == "*");
        if all && settings.tenants.len() > 1 {
            problems.push(format!(
                "{key}.tenants: \"*\" already grants every tenant; list nothing else"
            ));
        }
        for (position, id) in settings.tenants.iter().enumerate() {
            if id != "*" && !known.contains(id.as_str()) {
                problems.push(format!("{key}.tenants[{position}]: no tenant {id:?}"));
            }
        }
        if settings.tenants.is_empty() && settings.tags.is_empty() {
            problems.push(format!(
                "{key}: grants no tenant; set tenants (ids or [\"*\"]) or tags"
            ));
        }
        if settings.operator && !all {
            problems.push(format!("{key}.operator: operator keys read /metrics, which names every tenant, so they need tenants = [\"*\"]"));
        }
        let scope = if all {
            Scope::All
        } else {
            Scope::Some {
                tenants: settings
                    .tenants
                    .iter()
                    .filter_map(|id| TenantId::parse(id).ok())
                    .collect(),
                tags: settings.tags.iter().cloned().collect(),
            }
        };
        let per_minute = settings
            .requests_per_minute
            .unwrap_or(auth.default_requests_per_minute);
        if per_minute == 0 {
            problems.push(format!("{key}.requests_per_minute: must be greater than 0"));
        }
        match ApiKey::new(
            settings.name.clone(),
            &digest,
            scope,
            settings.operator,
            per_minute,
        ) {
            Some(api_key) if problems.len() == before => ring.push(api_key),
            Some(_) => {}
            None if per_minute == 0 => {}
            None => problems.push(format!(
                "{key}.sha256: must be the 64 hex digits of the key's SHA-256 (`scoregate keygen`)"
            )),
        }
    }
    KeyRing::new(ring)
}

type Endpoints = (Cloud, Option<Geo>, Url, Url, String);

fn resolve_endpoints(
    settings: &TenantSettings,
    upstream: &UpstreamSettings,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<Endpoints> {
    // Hosts set in [upstream] belong to [upstream]'s cloud: a tenant that names its own cloud
    // gets that cloud's hosts unless it overrides them itself.
    let inherits = settings.cloud.is_none();
    let cloud = settings.cloud.unwrap_or(upstream.cloud);
    let geo = settings.geo.or(if inherits { upstream.geo } else { None });
    if settings.geo.is_some() && cloud != Cloud::Commercial {
        problems.push(format!(
            "{key}.geo: geo API hosts exist only in the commercial cloud"
        ));
        return None;
    }
    check_https(
        &format!("{key}.authority_host"),
        settings.authority_host.as_ref(),
        problems,
    );
    check_https(
        &format!("{key}.api_base"),
        settings.api_base.as_ref(),
        problems,
    );
    let authority_host = settings
        .authority_host
        .clone()
        .or_else(|| inherits.then(|| upstream.authority_host.clone()).flatten())
        .or_else(|| {
            cloud
                .authority_host()
                .and_then(|host| Url::parse(host).ok())
        });
    let api_base = settings
        .api_base
        .clone()
        .or_else(|| inherits.then(|| upstream.api_base.clone()).flatten())
        .or_else(|| cloud.api_base(geo).and_then(|base| Url::parse(&base).ok()));
    let scope = settings
        .scope
        .clone()
        .or_else(|| upstream.scope.clone())
        .unwrap_or_else(|| crate::wire::DEFENDER_SCOPE.to_owned());
    if let Some(scope) = &settings.scope {
        check_scope(&format!("{key}.scope"), scope, problems);
    }
    let (Some(authority_host), Some(api_base)) = (authority_host, api_base) else {
        problems.push(format!(
            "{key}: cloud \"custom\" needs authority_host and api_base (in [upstream] or on the tenant)"
        ));
        return None;
    };
    Some((cloud, geo, authority_host, api_base, scope))
}

fn resolve_credential(
    settings: &TenantSettings,
    key: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Credential> {
    match (&settings.client_secret, &settings.certificate) {
        (Some(source), None) => read_secret(
            source,
            &format!("{key}.client_secret"),
            base_dir,
            env,
            problems,
        )
        .map(Credential::Secret),
        (None, Some(certificate)) => {
            let password = match &certificate.password {
                Some(source) => Some(read_secret(
                    source,
                    &format!("{key}.certificate.password"),
                    base_dir,
                    env,
                    problems,
                )?),
                None => None,
            };
            let file = base_dir.join(&certificate.file);
            match Certificate::from_file(&file, password.as_ref()) {
                Ok(certificate) => Some(Credential::Certificate(Arc::new(certificate))),
                Err(error) => {
                    problems.push(format!(
                        "{key}.certificate.file: {}: {error}",
                        file.display()
                    ));
                    None
                }
            }
        }
        (None, None) => {
            problems.push(format!(
                "{key}: needs a credential: client_secret or certificate"
            ));
            None
        }
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{key}: has both client_secret and certificate; keep one"
            ));
            None
        }
    }
}

fn read_secret(
    source: &SecretSource,
    key: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    let value = match (&source.env, &source.file) {
        (Some(name), None) => match env(name) {
            Some(value) => value,
            None => {
                problems.push(format!("{key}.env: environment variable {name} is not set"));
                return None;
            }
        },
        (None, Some(file)) => {
            let path = base_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim_end_matches(['\r', '\n']).to_owned(),
                Err(error) => {
                    problems.push(format!(
                        "{key}.file: cannot read {}: {error}",
                        path.display()
                    ));
                    return None;
                }
            }
        }
        _ => {
            problems.push(format!("{key}: give exactly one of env or file"));
            return None;
        }
    };
    if value.trim().is_empty() {
        problems.push(format!("{key}: the secret is empty"));
        return None;
    }
    Some(SecretString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "8f2c4e1a-1b2c-4d5e-8f90-123456789abc";
    const CLIENT: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    /// Writes a test file; authentication is turned off unless the text configures it.
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        let main_file = name.ends_with(".toml") && !name.starts_with("tenants");
        let text = if text.contains("[auth]") || !main_file {
            text.to_owned()
        } else {
            // Appended, not prepended: keys before the first table header stay top-level.
            format!("{text}\n[auth]\nenabled = false\n")
        };
        std::fs::write(&path, text).unwrap();
        path
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("scoregate-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn tenant(id: &str, tenant_id: &str, client_id: &str, extra: &str) -> String {
        format!(
            "[[tenants]]\nid = \"{id}\"\ntenant_id = \"{tenant_id}\"\nclient_id = \"{client_id}\"\n{extra}\n"
        )
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(other) => panic!("expected Invalid, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            &tenant("contoso", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
        );
        let config = Config::load_with_env(&path, env(&[("S", "s3cret")])).unwrap();
        let contoso = config.registry.get("contoso").unwrap();
        assert_eq!(contoso.name, "contoso");
        assert_eq!(
            contoso.api_base.as_str(),
            "https://api.security.microsoft.com/"
        );
        assert_eq!(
            contoso.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(contoso.scope, crate::wire::DEFENDER_SCOPE);
        assert_eq!(
            contoso.quota,
            QuotaLimits {
                per_minute: 100,
                per_hour: 1500
            }
        );
        assert!(!config.auth.enabled);
        assert!(!config.summary().contains("s3cret"));
    }

    #[test]
    fn env_overrides_reach_nested_keys_and_parse_values() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "[refresh]\nenabled = true\n");
        let config = Config::load_with_env(
            &path,
            env(&[
                ("SCOREGATE__REFRESH__ENABLED", "false"),
                ("SCOREGATE__CACHE__FRESH_SECONDS", "60"),
                ("SCOREGATE__SERVER__BIND", "0.0.0.0:9000"),
            ]),
        )
        .unwrap();
        assert!(!config.refresh.enabled);
        assert_eq!(config.cache.fresh_seconds, 60);
        assert_eq!(config.server.bind.port(), 9000);
    }

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
    fn every_bad_tenant_value_is_reported_with_the_tenant() {
        let dir = tempdir();
        let text = [
            tenant(
                "bad id",
                "not-a-guid",
                CLIENT,
                "client_secret = { env = \"MISSING\" }",
            ),
            tenant(
                "ok",
                TENANT,
                "xyz",
                "client_secret = { env = \"EMPTY\" }\ngeo = \"eu\"\ncloud = \"gcc\"",
            ),
            tenant(
                "ok",
                TENANT,
                CLIENT,
                "client_secret = { file = \"nope.txt\" }",
            ),
            tenant("nocred", TENANT, "11111111-2222-3333-4444-555555555555", ""),
        ]
        .concat();
        let path = write(&dir, "a.toml", &text);
        let problems = problems(Config::load_with_env(&path, env(&[("EMPTY", "  ")])));
        let all = problems.join("\n");
        for expected in [
            "tenants[0] (id \"bad id\").id:",
            "tenants[0] (id \"bad id\").tenant_id: \"not-a-guid\" is not a GUID",
            "environment variable MISSING is not set",
            "tenants[1] (id \"ok\").client_id: \"xyz\" is not a GUID",
            "tenants[1] (id \"ok\").client_secret: the secret is empty",
            "tenants[1] (id \"ok\").geo: geo API hosts exist only in the commercial cloud",
            "tenants[2] (id \"ok\").id: duplicates tenants[1]",
            "tenants[2] (id \"ok\").client_secret.file: cannot read",
            "tenants[3] (id \"nocred\"): needs a credential",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
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

    #[test]
    fn custom_clouds_need_hosts_and_https() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            &format!(
                "[upstream]\ncloud = \"custom\"\nauthority_host = \"http://127.0.0.1:1\"\n{}",
                tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
            ),
        );
        let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
        assert!(
            all.contains("upstream.authority_host: must be an https:// URL"),
            "{all}"
        );
        assert!(
            all.contains("cloud \"custom\" needs authority_host and api_base"),
            "{all}"
        );
    }

    #[test]
    fn a_multi_tenant_app_may_serve_several_tenants_but_not_twice_the_same() {
        let dir = tempdir();
        let other = "22222222-2222-4222-8222-222222222222";
        let text = [
            tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
            tenant("b", other, CLIENT, "client_secret = { env = \"S\" }"),
        ]
        .concat();
        let path = write(&dir, "a.toml", &text);
        let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
        assert_eq!(config.registry.len(), 2);
        let twice = [
            text.clone(),
            tenant("c", other, CLIENT, "client_secret = { env = \"S\" }"),
        ]
        .concat();
        let path = write(&dir, "b.toml", &twice);
        let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
        assert!(
            all.contains("same tenant_id and client_id as tenants[1]"),
            "{all}"
        );
    }

    #[test]
    fn tenants_may_live_in_a_separate_file_and_gov_clouds_get_gov_hosts() {
        let dir = tempdir();
        write(
            &dir,
            "tenants.toml",
            &tenant("gov", TENANT, CLIENT, "client_secret = { file = \"s.txt\" }\ncloud = \"gcc-high\"\nscope = \"https://api-gov.securitycenter.microsoft.us/.default\""),
        );
        write(&dir, "s.txt", "secret\n");
        let path = write(&dir, "a.toml", "tenants_file = \"tenants.toml\"\n");
        let config = Config::load_with_env(&path, env(&[])).unwrap();
        let gov = config.registry.get("gov").unwrap();
        assert_eq!(
            gov.authority_host.as_str(),
            "https://login.microsoftonline.us/"
        );
        assert_eq!(
            gov.api_base.as_str(),
            "https://api-gov.securitycenter.microsoft.us/"
        );
        assert_eq!(
            gov.scope,
            "https://api-gov.securitycenter.microsoft.us/.default"
        );
        match &gov.credential {
            Credential::Secret(secret) => {
                assert_eq!(secrecy::ExposeSecret::expose_secret(secret), "secret")
            }
            Credential::Certificate(_) => panic!("expected a secret"),
        }
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "[server\n");
        let error = Config::load_with_env(&path, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/scoregate.example.toml");
        let config = Config::load_with_env(
            &path,
            env(&[("CONTOSO_SECRET", "a"), ("MSP_APP_SECRET", "b")]),
        )
        .unwrap();
        assert_eq!(config.registry.len(), 2);
        let summary = config.summary();
        assert!(summary.contains("cloud commercial: 1"), "{summary}");
        assert!(summary.contains("cloud gcc-high: 1"), "{summary}");
    }

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn authentication_on_without_keys_refuses_to_load() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "[auth]\nenabled = true\n");
        let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
        assert!(
            all.contains("auth.enabled: authentication is on but no [[api_keys]]"),
            "{all}"
        );
    }

    #[test]
    fn api_keys_are_validated_and_scoped() {
        let dir = tempdir();
        let text = format!(
            "[auth]\nenabled = true\n{}{}\
             [[api_keys]]\nname = \"all\"\nsha256 = \"{DIGEST}\"\ntenants = [\"*\"]\noperator = true\n\
             [[api_keys]]\nname = \"gold\"\nsha256 = \"{}\"\ntags = [\"gold\"]\nrequests_per_minute = 5\n",
            tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }\ntags = [\"gold\"]"),
            tenant("b", "22222222-2222-4222-8222-222222222222", CLIENT, "client_secret = { env = \"S\" }"),
            "a".repeat(64)
        );
        let path = write(&dir, "a.toml", &text);
        let config = Config::load_with_env(&path, env(&[("S", "x")])).unwrap();
        assert_eq!(config.keys.len(), 2);

        let bad = format!(
            "[auth]\nenabled = true\n{}\
             [[api_keys]]\nname = \"x\"\nsha256 = \"nothex\"\ntenants = [\"nope\"]\n\
             [[api_keys]]\nname = \"x\"\nsha256 = \"{DIGEST}\"\ntenants = [\"a\"]\noperator = true\n\
             [[api_keys]]\nname = \"empty\"\nsha256 = \"{DIGEST}\"\n",
            tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }"),
        );
        let path = write(&dir, "b.toml", &bad);
        let all = problems(Config::load_with_env(&path, env(&[("S", "x")]))).join("\n");
        for expected in [
            "api_keys[0] (name \"x\").tenants[0]: no tenant \"nope\"",
            "api_keys[0] (name \"x\").sha256: must be the 64 hex digits",
            "api_keys[1] (name \"x\").name: another key has this name",
            "api_keys[1] (name \"x\").operator: operator keys read /metrics",
            "api_keys[2] (name \"empty\").sha256: another key has this digest",
            "api_keys[2] (name \"empty\"): grants no tenant",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }
}
