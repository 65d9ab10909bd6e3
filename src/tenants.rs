//! The tenant registry: every app registration the gateway holds, resolved and validated.
//!
//! A [`Tenant`] is what the rest of the gateway needs to call Defender for one customer: where
//! to get a token (authority host, Entra tenant id, client id, credential, scope) and where to
//! call (API base). Registrations are immutable once built; a reload builds a new registry.
//! This module also owns the one table of Microsoft clouds and their hosts (Entra ID authority,
//! Defender API and Microsoft Graph host of each national cloud, as Microsoft documents them).

use crate::credential::Credential;
pub use crate::model::{InvalidTenantId, TenantId};
use crate::model::{Metric, UpstreamService};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use url::Url;

/// A Microsoft cloud, which decides the token authority and the Defender API host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Commercial (worldwide) cloud.
    Commercial,
    /// US Government Community Cloud.
    Gcc,
    /// US Government Community Cloud High.
    GccHigh,
    /// US Department of Defense.
    Dod,
    /// Hosts given explicitly (`authority_host` and `api_base`), e.g. the emulator.
    Custom,
}

impl Cloud {
    /// Every cloud, in the order summaries list them.
    pub const ALL: [Cloud; 5] = [
        Cloud::Commercial,
        Cloud::Gcc,
        Cloud::GccHigh,
        Cloud::Dod,
        Cloud::Custom,
    ];

    /// The configuration spelling (`gcc-high`).
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Commercial => "commercial",
            Cloud::Gcc => "gcc",
            Cloud::GccHigh => "gcc-high",
            Cloud::Dod => "dod",
            Cloud::Custom => "custom",
        }
    }

    /// Entra ID authority host of the cloud; `None` for [`Cloud::Custom`].
    pub fn authority_host(self) -> Option<&'static str> {
        match self {
            Cloud::Commercial | Cloud::Gcc => Some("https://login.microsoftonline.com"),
            Cloud::GccHigh | Cloud::Dod => Some("https://login.microsoftonline.us"),
            Cloud::Custom => None,
        }
    }

    /// Defender API base of the cloud (geo hosts exist only in the commercial cloud).
    pub fn api_base(self, geo: Option<Geo>) -> Option<String> {
        match (self, geo) {
            (Cloud::Commercial, None) => Some("https://api.security.microsoft.com".to_owned()),
            (Cloud::Commercial, Some(geo)) => Some(format!(
                "https://{}.api.security.microsoft.com",
                geo.as_str()
            )),
            (Cloud::Gcc, _) => Some("https://api-gcc.securitycenter.microsoft.us".to_owned()),
            (Cloud::GccHigh | Cloud::Dod, _) => {
                Some("https://api-gov.securitycenter.microsoft.us".to_owned())
            }
            (Cloud::Custom, _) => None,
        }
    }

    /// Microsoft Graph base of the cloud (commercial and GCC share the global host, GCC High and
    /// DoD have their own); `None` for [`Cloud::Custom`].
    pub fn graph_base(self) -> Option<&'static str> {
        match self {
            Cloud::Commercial | Cloud::Gcc => Some("https://graph.microsoft.com"),
            Cloud::GccHigh => Some("https://graph.microsoft.us"),
            Cloud::Dod => Some("https://dod-graph.microsoft.us"),
            Cloud::Custom => None,
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Defender geo API host (commercial cloud only): a performance choice, never required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Geo {
    /// United States.
    Us,
    /// European Union.
    Eu,
    /// United Kingdom.
    Uk,
    /// Australia.
    Au,
    /// Switzerland.
    Swa,
    /// India.
    Ina,
    /// United Arab Emirates.
    Aea,
}

impl Geo {
    /// The host label (`eu` in `eu.api.security.microsoft.com`).
    pub fn as_str(self) -> &'static str {
        match self {
            Geo::Us => "us",
            Geo::Eu => "eu",
            Geo::Uk => "uk",
            Geo::Au => "au",
            Geo::Swa => "swa",
            Geo::Ina => "ina",
            Geo::Aea => "aea",
        }
    }
}

/// Outbound call limits of one tenant, as Microsoft counts them (per app and tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Calls allowed in any minute.
    pub per_minute: u32,
    /// Calls allowed in any hour.
    pub per_hour: u32,
}

/// What a tenant reads besides Defender's device score: its metrics and Microsoft Graph's host,
/// token scope and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSources {
    /// The metrics the tenant has, in [`Metric::ALL`] order; never empty.
    pub metrics: Vec<Metric>,
    /// Microsoft Graph base (`https://graph.microsoft.com`); `None` only for a custom cloud
    /// whose tenant has no `secure` metric.
    pub graph_base: Option<Arc<Url>>,
    /// Token scope of Graph calls, by default `{graph_base}/.default`
    /// ([`crate::wire::GRAPH_SCOPE`] in the commercial cloud and for custom hosts).
    pub graph_scope: Arc<str>,
    /// Graph calls allowed per minute (Graph's default: 150 per app and tenant).
    pub graph_per_minute: u32,
    /// Graph calls in flight at once (Graph's default: 4 per app and tenant).
    pub graph_max_concurrent: u32,
}

impl Default for TenantSources {
    /// Defender's device score alone, with Graph's commercial host and documented limits.
    fn default() -> Self {
        Self {
            metrics: vec![Metric::Device],
            graph_base: Cloud::Commercial
                .graph_base()
                .and_then(|base| Url::parse(base).ok())
                .map(Arc::new),
            graph_scope: Arc::from(crate::wire::GRAPH_SCOPE),
            graph_per_minute: 150,
            graph_max_concurrent: 4,
        }
    }
}

/// One app registration, resolved: everything needed to fetch this tenant's score.
///
/// Hosts and scopes are shared (`Arc`) between the registrations that use the same ones
/// (usually all of them): with thousands of tenants, a copy each added up (issue 15).
pub struct Tenant {
    /// The gateway's id, used in routes.
    pub id: TenantId,
    /// Display name for people.
    pub name: String,
    /// Entra tenant id (GUID, lower case).
    pub tenant_id: String,
    /// Application (client) id (GUID, lower case); one app may serve many tenants.
    pub client_id: String,
    /// How the app proves itself to Entra.
    pub credential: Credential,
    /// The cloud the tenant lives in.
    pub cloud: Cloud,
    /// The geo API host, if one was chosen.
    pub geo: Option<Geo>,
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Arc<Url>,
    /// Defender API base, e.g. `https://api.security.microsoft.com`.
    pub api_base: Arc<Url>,
    /// Token scope, by default [`crate::wire::DEFENDER_SCOPE`].
    pub scope: Arc<str>,
    /// Free-form labels callers filter on.
    pub tags: Vec<String>,
    /// Outbound limits for this tenant (Defender's).
    pub quota: QuotaLimits,
    /// The metrics the tenant has and Microsoft Graph's settings.
    pub sources: TenantSources,
}

impl Tenant {
    /// Whether the tenant has `metric`.
    pub fn has(&self, metric: Metric) -> bool {
        self.sources.metrics.contains(&metric)
    }

    /// The metrics the tenant has.
    pub fn metrics(&self) -> &[Metric] {
        &self.sources.metrics
    }

    /// The rate limits of the tenant's calls to `service`. Graph counts per minute (and per ten
    /// minutes, far above 150/min × 10); the hour window is left wide for it.
    pub fn limits(&self, service: UpstreamService) -> QuotaLimits {
        match service {
            UpstreamService::Defender => self.quota,
            UpstreamService::Graph => QuotaLimits {
                per_minute: self.sources.graph_per_minute,
                per_hour: self.sources.graph_per_minute.saturating_mul(60),
            },
        }
    }

    /// Most calls of the tenant to `service` in flight at once, when the service caps them
    /// (Graph: 4 per app and tenant); `None` for Defender, whose only cap is the global one.
    pub fn max_concurrent(&self, service: UpstreamService) -> Option<u32> {
        match service {
            UpstreamService::Defender => None,
            UpstreamService::Graph => Some(self.sources.graph_max_concurrent),
        }
    }
}

impl fmt::Debug for Tenant {
    // Spelled out so that a credential can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential.kind())
            .field("cloud", &self.cloud)
            .field("api_base", &self.api_base.as_str())
            .finish_non_exhaustive()
    }
}

/// All registrations, sorted by id, shared read-only by every request.
#[derive(Debug, Default)]
pub struct Registry {
    /// Sorted by id, so listings and paging are stable.
    tenants: Vec<Arc<Tenant>>,
    /// Index into `tenants` for O(1) lookups on the hot path.
    by_id: HashMap<TenantId, usize>,
}

impl Registry {
    /// Builds a registry; ids must be unique (the config loader checks that first).
    pub fn new(mut tenants: Vec<Tenant>) -> Self {
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        // Collected into a new vector: an in-place `collect` would keep the registrations'
        // buffer (their size × count, 2.3 MiB at 10,000 tenants) for a vector of pointers.
        let mut shared = Vec::with_capacity(tenants.len());
        shared.extend(tenants.into_iter().map(Arc::new));
        let tenants = shared;
        let by_id = tenants
            .iter()
            .enumerate()
            .map(|(index, tenant)| (tenant.id.clone(), index))
            .collect();
        Self { tenants, by_id }
    }

    /// The tenant with this gateway id.
    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        let id = TenantId::parse(id).ok()?;
        self.by_id.get(&id).map(|&index| &self.tenants[index])
    }

    /// Every tenant, sorted by id.
    pub fn all(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    /// Number of registrations.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_url_safe_and_bounded() {
        assert!(TenantId::parse("contoso").is_ok());
        assert!(TenantId::parse("Contoso_2.eu-west").is_ok());
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "café",
            "a%20b",
            &"x".repeat(65),
        ] {
            assert_eq!(TenantId::parse(bad), Err(InvalidTenantId), "{bad:?}");
        }
    }

    #[test]
    fn clouds_map_to_the_documented_hosts() {
        assert_eq!(
            Cloud::GccHigh.authority_host(),
            Some("https://login.microsoftonline.us")
        );
        assert_eq!(
            Cloud::Commercial.api_base(Some(Geo::Eu)).as_deref(),
            Some("https://eu.api.security.microsoft.com")
        );
        assert_eq!(
            Cloud::Gcc.api_base(None).as_deref(),
            Some("https://api-gcc.securitycenter.microsoft.us")
        );
        assert_eq!(Cloud::Custom.api_base(None), None);
        assert_eq!(Cloud::Gcc.graph_base(), Some("https://graph.microsoft.com"));
        assert_eq!(
            Cloud::GccHigh.graph_base(),
            Some("https://graph.microsoft.us")
        );
        assert_eq!(
            Cloud::Dod.graph_base(),
            Some("https://dod-graph.microsoft.us")
        );
        assert_eq!(Cloud::Custom.graph_base(), None);
    }

    #[test]
    fn the_registry_keeps_one_pointer_per_tenant_not_the_registrations_buffer() {
        let tenants: Vec<Tenant> = (0..100)
            .rev()
            .map(|n| {
                crate::policy::testing::registration(
                    &format!("tenant-{n:03}"),
                    crate::policy::testing::DEFENDER_LIMITS,
                )
            })
            .collect();
        let registry = Registry::new(tenants);
        assert_eq!(registry.tenants.capacity(), 100);
        assert_eq!(registry.all()[0].id.as_str(), "tenant-000");
        assert_eq!(
            registry
                .get("tenant-042")
                .map(|tenant| tenant.name.as_str()),
            Some("tenant-042")
        );
    }
}
