//! Configuration: typed settings from a TOML file plus `SCOREGATE__SECTION__KEY` environment
//! overrides, validated at load into a [`Config`] whose tenants are ready to use.
//!
//! Every problem found is reported at once, each naming its key (and the tenant), so that an
//! operator fixes a file in one pass. Secrets are read here (from the environment or files) and
//! wrapped at once; no error message ever quotes one. Relative paths are resolved against the
//! directory of the file that names them.
//!
//! # Layout
//!
//! One file (or folder) per section holds its serde type (each field documented: these comments
//! are the reference of the file's keys, with their defaults), its checks and its resolution,
//! with their unit tests:
//!
//! - `server`: `[server]`, and the cursor secret it names.
//! - `auth/`: `[auth]` and `[[api_keys]]`, resolved into the key ring; `[auth.entra]` into the
//!   Entra ID callers.
//! - `upstream`: `[upstream]`'s checks and its extra CA file into PEM bytes.
//! - `cache`, `refresh`: `[cache]` and `[refresh]`, checked.
//! - `history`: `[history]`, resolved into its owner's [`HistoryConfig`].
//! - `tenants/`: `[[tenants]]` (and `tenants_file`) resolved into the registry's tenants:
//!   endpoints, sources, credentials.
//! - `alerts`, `cluster`: `[[alerts]]`/`[[webhooks]]` and `[cluster]`, resolved into their
//!   owners' types.
//!
//! What the sections share: `env` (the `SCOREGATE__SECTION__KEY` overrides, applied before
//! deserializing), [`limits`] (the bound of every number), `checks` (ranges, URLs, scopes,
//! metric lists) and `secret` (`{ env | file }` secrets). This file holds [`Settings`] (the whole
//! file), [`Config`], [`ConfigError`], [`Config::load`], which runs the sections in a fixed
//! order, and [`Config::summary`].
//!
//! The settings of `[upstream]`, `[cache]` and the resolved `[history]` are defined by their owners
//! (`upstream`, `cache`, `history`) and re-exported here: nothing below `config` imports it.

mod alerts;
mod auth;
mod cache;
mod checks;
mod cluster;
mod env;
mod history;
pub mod limits;
mod refresh;
mod secret;
mod server;
mod tenants;
#[cfg(test)]
mod test_support;
mod upstream;

pub use crate::history::HistoryConfig;
pub use alerts::{AlertSettings, DropPercentSettings, DropSettings, WebhookSettings};
pub use auth::{ApiKeySettings, AuthSettings};
pub use cache::CacheSettings;
pub use cluster::{ClusterSettings, MAX_REPLICAS};
pub use env::ENV_PREFIX;
pub use history::HistorySettings;
pub use refresh::RefreshSettings;
pub use secret::SecretSource;
pub use server::ServerSettings;
pub use tenants::{CertificateSource, TenantSettings};
pub use upstream::UpstreamSettings;

use crate::auth::KeyRing;
use crate::tenants::Registry;
use env::apply_env_overrides;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tenants::TenantsFile;

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
    pub alerts: Vec<alerts::AlertSettings>,
    /// Endpoints that receive alert events (`[[webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<alerts::WebhookSettings>,
    /// Several replicas sharing state through Redis; absent for a single process.
    #[serde(default)]
    pub cluster: Option<cluster::ClusterSettings>,
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
    /// The cursor secret, read from `server.cursor_key`.
    pub cursor_key: Option<secrecy::SecretString>,
    /// Every registration, resolved.
    pub registry: Arc<Registry>,
    /// The callers' keys.
    pub keys: Arc<KeyRing>,
    /// `[auth.entra]`, resolved: Entra ID callers; `None` when not configured.
    pub entra: Option<Arc<crate::auth::entra::EntraConfig>>,
    /// `[history]`, resolved.
    pub history: HistoryConfig,
    /// `[[alerts]]` and `[[webhooks]]`, resolved (scopes against the registry).
    pub alerts: crate::alerts::AlertsConfig,
    /// `[cluster]`, resolved; `None` for a single process.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Problems that do not stop the gateway (a secret file others may read), one line each,
    /// starting with the key; logged at load and printed by `check-config`.
    pub warnings: Vec<String>,
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
        upstream::validate_upstream(&upstream, &mut problems);
        server::validate_server(&settings.server, &mut problems);
        auth::validate_auth(&settings.auth, &settings.server, &mut problems);
        cache::validate_cache(&settings.cache, &mut problems);
        refresh::validate_refresh(&settings.refresh, &mut problems);
        history::validate_history(&settings.history, &mut problems);
        let extra_ca_pem = upstream.extra_ca_file.as_ref().and_then(|file| {
            upstream::read_extra_ca(
                &base_dir.join(file),
                &mut problems,
                "upstream.extra_ca_file",
            )
        });
        let cursor_key =
            server::resolve_cursor_key(&settings.server, base_dir, &lookup, &mut problems);
        let resolved =
            tenants::resolve_tenants(&tenants, &upstream, base_dir, &lookup, &mut problems);
        let keys = auth::resolve_keys(&settings.api_keys, &settings.auth, &resolved, &mut problems);
        let entra =
            auth::entra::resolve_entra(&settings.auth, &resolved, &mut problems).map(Arc::new);
        let history = history::resolve_history(&settings.history, base_dir, &lookup, &mut problems);
        if history.enabled && !history.controls {
            for (index, alert) in settings.alerts.iter().enumerate() {
                if alert.control_regressed.is_some() {
                    problems.push(format!(
                        "alerts[{index}] (name {:?}).control_regressed: needs [history] \
                         controls = true (the per-control record it watches)",
                        alert.name
                    ));
                }
            }
        }
        let alerts = alerts::resolve_alerts(
            &settings.alerts,
            &settings.webhooks,
            &resolved,
            history.enabled,
            history.retention_days,
            base_dir,
            &lookup,
            &mut problems,
        );
        let cluster = settings.cluster.as_ref().and_then(|cluster| {
            use secrecy::ExposeSecret;
            let history_url = history.enabled.then(|| history.url.expose_secret());
            cluster::resolve(cluster, history_url, base_dir, &lookup, &mut problems)
        });
        let warnings = tenants::loose_file_warnings(&tenants, base_dir);
        for warning in &warnings {
            tracing::warn!(config = %path.display(), "{warning}");
        }
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
            cursor_key,
            registry: Arc::new(Registry::new(resolved)),
            keys: Arc::new(keys),
            entra,
            history,
            alerts,
            cluster,
            warnings,
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
        for metric in crate::upstream::Metric::ALL {
            let count = self
                .registry
                .all()
                .iter()
                .filter(|tenant| tenant.has(metric))
                .count();
            let _ = writeln!(out, "  metric {metric}: {count} tenant(s)");
        }
        let _ = writeln!(
            out,
            "  listen {}, authentication {}, {} API key(s)",
            self.server.bind,
            if self.auth.enabled { "on" } else { "OFF" },
            self.keys.len()
        );
        if let Some(entra) = &self.entra {
            if !self.auth.enabled {
                let _ = writeln!(
                    out,
                    "  entra: configured, not in force while authentication is off"
                );
            }
            out.push_str(&auth::entra::summary(entra));
        }
        if self.history.enabled {
            let _ = writeln!(
                out,
                "  history {}, {} day(s) kept",
                self.history.redacted_url(),
                self.history.retention_days
            );
        } else {
            let _ = writeln!(out, "  history off");
        }
        let _ = writeln!(
            out,
            "  alerts {} rule(s), {} webhook(s)",
            self.alerts.rules.len(),
            self.alerts.webhooks.len()
        );
        if let Some(cluster) = &self.cluster {
            let _ = writeln!(
                out,
                "  cluster: Redis {}, {} replica(s)",
                cluster.redacted_url(),
                cluster.replicas
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        out
    }
}

/// Reads and parses one TOML file; a syntax error keeps the parser's line and column.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{env, problems, tempdir, tenant, write, CLIENT, TENANT};
    use crate::tenants::QuotaLimits;

    #[test]
    fn a_control_regressed_rule_needs_the_controls_recorded() {
        let dir = tempdir();
        let rule = "[[alerts]]\nname = \"mfa\"\nmetric = \"secure\"\ncontrol_regressed = {}\n\n";
        let tenant = tenant("contoso", TENANT, CLIENT, "client_secret = { env = \"S\" }");
        let path = write(&dir, "a.toml", &format!("{rule}{tenant}"));
        let found = problems(Config::load_with_env(&path, env(&[("S", "s3cret")])));
        let expected =
            "alerts[0] (name \"mfa\").control_regressed: needs [history] controls = true";
        assert!(found.iter().any(|p| p.starts_with(expected)), "{found:?}");
        let path = write(
            &dir,
            "b.toml",
            &format!("[history]\ncontrols = true\n\n{rule}{tenant}"),
        );
        if let Err(error) = Config::load_with_env(&path, env(&[("S", "s3cret")])) {
            let found = error.to_string();
            assert!(!found.contains("controls = true"), "{found}");
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
            contoso
                .endpoint(crate::model::UpstreamService::Defender)
                .unwrap()
                .base
                .as_str(),
            "https://api.security.microsoft.com/"
        );
        assert_eq!(
            contoso.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        let defender = contoso.endpoint(crate::model::UpstreamService::Defender);
        assert_eq!(
            defender.map(|endpoint| &*endpoint.scope),
            Some(crate::wire::DEFENDER_SCOPE)
        );
        assert_eq!(
            contoso.limits(crate::model::UpstreamService::Defender),
            QuotaLimits {
                per_minute: 100,
                per_hour: 1500
            }
        );
        assert!(!config.auth.enabled);
        assert!(!config.summary().contains("s3cret"));
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
    fn the_example_configuration_is_valid_once_its_placeholder_digests_are_replaced() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/scoregate.example.toml");
        let secrets = env(&[("CONTOSO_SECRET", "a"), ("MSP_APP_SECRET", "b")]);
        // As shipped, the example's digests are placeholders: refused, and only they are.
        let found = problems(Config::load_with_env(&path, secrets.clone()));
        assert_eq!(found.len(), 2, "{found:?}");
        for problem in &found {
            assert!(
                problem.contains(".sha256: is the example configuration's placeholder digest")
                    && problem.contains("scoregate keygen"),
                "{problem}"
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let real = text
            .replace(
                "4f8cd4e2a1d9c2a2a0f0f2c5c0b7a9e1d3c6b8a7f5e4d3c2b1a0f9e8d7c6b5a4",
                &crate::auth::digest_hex("portal key"),
            )
            .replace(
                "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
                &crate::auth::digest_hex("dashboard key"),
            );
        let dir = tempdir();
        let path = write(&dir, "scoregate.toml", &real);
        let config = Config::load_with_env(&path, secrets).unwrap();
        assert_eq!(config.registry.len(), 2);
        let summary = config.summary();
        assert!(summary.contains("cloud commercial: 1"), "{summary}");
        assert!(summary.contains("cloud gcc-high: 1"), "{summary}");
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
