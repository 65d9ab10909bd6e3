//! Resolution: tenant settings into the [`Registry`](crate::tenants::Registry)'s tenants
//! (ids, endpoints, quota, credentials with their secrets read from the environment or files),
//! API key settings into the [`KeyRing`], and the extra CA file into its PEM bytes. Problems are
//! collected, each naming its key and tenant or key; a secret is never quoted.
//!
//! It deliberately does not check the settings that stand on their own (`validate` did, before)
//! nor build anything that talks to the network (credentials become tokens in [`crate::token`]).

use super::settings::{
    ApiKeySettings, AuthSettings, SecretSource, ServerSettings, TenantSettings, UpstreamSettings,
};
use super::validate::{check_range, limits};
use crate::auth::{ApiKey, KeyRing, Scope};
use crate::credential::{Certificate, Credential};
use crate::model::UpstreamService;
use crate::tenants::{Endpoint, Endpoints, QuotaLimits, Tenant, TenantId};
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use url::Url;

mod endpoints;
mod history;
use endpoints::{base_key, resolve_graph, resolve_hosts, resolve_metrics};
pub(super) use history::resolve_history;

/// The PEM bytes of `path` when it holds at least one certificate; otherwise a problem under `key`.
pub(super) fn read_extra_ca(path: &Path, problems: &mut Vec<String>, key: &str) -> Option<Vec<u8>> {
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

/// Whether `value` is a GUID in its hyphenated 36-character form (the only form Entra prints).
fn is_guid(value: &str) -> bool {
    value.len() == 36 && uuid::Uuid::parse_str(value).is_ok()
}

/// The tenants that resolved without a problem; every problem of every entry is reported.
pub(super) fn resolve_tenants(
    tenants: &[TenantSettings],
    upstream: &UpstreamSettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<Tenant> {
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    let mut seen_apps: HashMap<(String, String), usize> = HashMap::new();
    let mut resolved = Vec::with_capacity(tenants.len());
    let mut shared = Shared::default();
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
        let hosts = resolve_hosts(settings, upstream, &key, problems);
        let quota = QuotaLimits {
            per_minute: settings
                .requests_per_minute
                .unwrap_or(upstream.requests_per_minute),
            per_hour: settings
                .requests_per_hour
                .unwrap_or(upstream.requests_per_hour),
        };
        // Only the tenant's own overrides: inherited values were checked under [upstream].
        if let Some(per_minute) = settings.requests_per_minute {
            check_range(
                &format!("{key}.requests_per_minute"),
                per_minute.into(),
                1,
                limits::MAX_UPSTREAM_PER_MINUTE.into(),
                problems,
            );
        }
        if let Some(per_hour) = settings.requests_per_hour {
            check_range(
                &format!("{key}.requests_per_hour"),
                per_hour.into(),
                1,
                limits::MAX_UPSTREAM_PER_HOUR.into(),
                problems,
            );
        }
        let metrics = resolve_metrics(settings, upstream, &key, problems);
        // One endpoint per upstream service the tenant can call.
        let mut services = BTreeMap::new();
        if let Some((cloud, _, _, api_base, scope)) = &hosts {
            services.insert(
                UpstreamService::Defender,
                Endpoint {
                    base: shared.url(api_base.clone()),
                    scope: shared.text(scope.as_str()),
                    limits: quota,
                    max_concurrent: None,
                },
            );
            if let Some(graph) =
                resolve_graph(settings, upstream, *cloud, &key, problems, &mut shared)
            {
                services.insert(UpstreamService::Graph, graph);
            }
            // Every metric's service needs its endpoint; only a custom cloud can lack one.
            if let Some(metric) = metrics
                .iter()
                .find(|metric| !services.contains_key(&metric.service()))
            {
                problems.push(format!(
                    "{key}: the {metric} metric on cloud \"custom\" needs {} (in [upstream] or on the tenant)",
                    base_key(metric.service())
                ));
            }
        }
        if problems.len() != before {
            continue;
        }
        let (Some(id), Some(credential), Some((cloud, geo, authority_host, ..))) =
            (id, credential, hosts)
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
            authority_host: shared.url(authority_host),
            tags: settings.tags.clone(),
            metrics,
            endpoints: shared.endpoints(services),
        });
    }
    resolved
}

/// One copy of each host, scope and set of endpoints, shared by every registration that uses
/// it: thousands of tenants of one cloud name the same three hosts and two scopes.
#[derive(Default)]
struct Shared {
    urls: HashSet<Arc<Url>>,
    texts: HashSet<Arc<str>>,
    endpoints: HashSet<Endpoints>,
}

impl Shared {
    fn url(&mut self, url: impl Into<Arc<Url>>) -> Arc<Url> {
        intern(&mut self.urls, url.into())
    }

    fn text(&mut self, text: impl Into<Arc<str>>) -> Arc<str> {
        intern(&mut self.texts, text.into())
    }

    fn endpoints(&mut self, endpoints: BTreeMap<UpstreamService, Endpoint>) -> Endpoints {
        intern(&mut self.endpoints, Arc::new(endpoints))
    }
}

/// The copy `held` already has of `value`, else `value`, now held.
fn intern<T: std::hash::Hash + Eq + ?Sized>(held: &mut HashSet<Arc<T>>, value: Arc<T>) -> Arc<T> {
    if let Some(copy) = held.get(&value) {
        return copy.clone();
    }
    held.insert(value.clone());
    value
}

/// The callers' keys, checked against the resolved tenants (a key may only name known ids).
pub(super) fn resolve_keys(
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
        // The default was checked under [auth]; only the key's own value is named here.
        if let Some(own) = settings.requests_per_minute {
            check_range(
                &format!("{key}.requests_per_minute"),
                own.into(),
                1,
                limits::MAX_KEY_PER_MINUTE.into(),
                problems,
            );
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

/// The tenant's one credential: a client secret or a certificate (with its password, if any).
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

/// Reads a secret from exactly one of the environment or a file; trailing newlines are dropped.
pub(crate) fn read_secret(
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
mod tests;
