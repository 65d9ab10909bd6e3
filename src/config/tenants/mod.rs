//! `[[tenants]]` (and the `tenants_file` that may hold them): the serde types of an app
//! registration, and their resolution into the [`Registry`](crate::tenants::Registry)'s tenants:
//! ids, endpoints, quota, sources, and credentials with their secrets read from the environment
//! or files. Every problem of every entry is reported, each naming the tenant; a secret is never
//! quoted.
//!
//! It deliberately does not build anything that talks to the network (credentials become tokens
//! in [`crate::token`]).
//!
//! - this file: the serde types and [`resolve_tenants`], which assembles each [`Tenant`];
//! - `endpoints`: the hosts, scope, metrics and Graph settings, own or inherited;
//! - `credential`: the client secret or certificate, and warnings for loose credential files.

mod credential;
mod endpoints;

use super::checks::check_range;
use super::limits;
use super::secret::SecretSource;
use super::upstream::UpstreamSettings;
use crate::model::{Metric, UpstreamService};
use crate::tenants::{Cloud, Endpoint, Endpoints, Geo, QuotaLimits, Tenant, TenantId};
pub(super) use credential::loose_file_warnings;
use credential::resolve_credential;
use endpoints::{base_key, resolve_graph, resolve_hosts, resolve_metrics};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use url::Url;

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

#[cfg(test)]
mod tests;
