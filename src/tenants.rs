//! The tenant registry: every app registration the gateway holds, resolved and validated.
//!
//! A [`Tenant`] is what the rest of the gateway needs to call Microsoft for one customer: where
//! to get a token (authority host, Entra tenant id, client id, credential), which metrics it has,
//! and one [`Endpoint`] per upstream service (base URL, token scope, limits). Registrations are
//! immutable once built; a reload builds a new registry.
//! This module also owns the one table of Microsoft clouds and their hosts (Entra ID authority,
//! Defender API and Microsoft Graph host of each national cloud, as Microsoft documents them).

use crate::credential::Credential;
pub use crate::model::{InvalidTenantId, TenantId};
use crate::model::{Metric, UpstreamService};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaLimits {
    /// Calls allowed in any minute.
    pub per_minute: u32,
    /// Calls allowed in any hour.
    pub per_hour: u32,
}

impl QuotaLimits {
    /// No call at all: the limits of a service the tenant has no endpoint for.
    pub const NONE: QuotaLimits = QuotaLimits {
        per_minute: 0,
        per_hour: 0,
    };
}

/// Where and how a tenant calls one upstream service: one record per service, whatever the
/// service, so that a source needs no field of its own on [`Tenant`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The service's base URL (`https://api.security.microsoft.com`,
    /// `https://graph.microsoft.com`); a source adds its path.
    pub base: Arc<Url>,
    /// Token scope of the service's calls (`https://api.securitycenter.microsoft.com/.default`).
    pub scope: Arc<str>,
    /// Calls allowed per minute and per hour.
    pub limits: QuotaLimits,
    /// Calls in flight at once, when the service caps them per tenant (Graph: 4 per app and
    /// tenant); `None` when only the global cap applies (Defender).
    pub max_concurrent: Option<u32>,
}

impl fmt::Debug for Endpoint {
    // Spelled out so that a base URL's user and password, if one was ever configured, stay
    // out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut base = (*self.base).clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        f.debug_struct("Endpoint")
            .field("base", &base.as_str())
            .field("scope", &self.scope)
            .field("limits", &self.limits)
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

/// A tenant's endpoints, one per upstream service it can call. Shared (`Arc`) between the
/// registrations that have the same ones (usually all of them), like their hosts.
pub type Endpoints = Arc<BTreeMap<UpstreamService, Endpoint>>;

/// A test registration's endpoints: Defender at `https://api.example.test` with `defender`'s
/// limits, Graph at its commercial host with `graph_per_minute` and `graph_max_concurrent`.
#[cfg(test)]
pub(crate) fn test_endpoints(
    defender: QuotaLimits,
    graph_per_minute: u32,
    graph_max_concurrent: u32,
) -> Endpoints {
    let url = |base: &str| Arc::new(Url::parse(base).expect("a valid URL"));
    let defender = Endpoint {
        base: url("https://api.example.test"),
        scope: Arc::from(crate::wire::DEFENDER_SCOPE),
        limits: defender,
        max_concurrent: None,
    };
    let graph = Endpoint {
        base: url(crate::wire::GRAPH_RESOURCE),
        scope: Arc::from(crate::wire::GRAPH_SCOPE),
        limits: QuotaLimits {
            per_minute: graph_per_minute,
            per_hour: graph_per_minute.saturating_mul(60),
        },
        max_concurrent: Some(graph_max_concurrent),
    };
    Arc::new(BTreeMap::from([
        (UpstreamService::Defender, defender),
        (UpstreamService::Graph, graph),
    ]))
}

/// One app registration, resolved: everything needed to fetch this tenant's scores.
///
/// Hosts, scopes and endpoints are shared (`Arc`) between the registrations that use the same
/// ones (usually all of them): with thousands of tenants, a copy each added up (issue 15).
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
    /// Free-form labels callers filter on.
    pub tags: Vec<String>,
    /// The metrics the tenant has, in [`Metric::ALL`] order; never empty.
    pub metrics: Vec<Metric>,
    /// Where and how the tenant calls each upstream service: base URL, token scope, limits.
    /// Configuration makes sure the service of every metric the tenant has is here.
    pub endpoints: Endpoints,
}

impl Tenant {
    /// Whether the tenant has `metric`.
    pub fn has(&self, metric: Metric) -> bool {
        self.metrics.contains(&metric)
    }

    /// The metrics the tenant has.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The tenant's endpoint for `service`; `None` when no metric of the tenant reads from it
    /// and its cloud names no host for it.
    pub fn endpoint(&self, service: UpstreamService) -> Option<&Endpoint> {
        self.endpoints.get(&service)
    }

    /// The rate limits of the tenant's calls to `service` ([`QuotaLimits::NONE`] without an
    /// endpoint for it: no metric of the tenant calls it).
    pub fn limits(&self, service: UpstreamService) -> QuotaLimits {
        self.endpoint(service)
            .map_or(QuotaLimits::NONE, |endpoint| endpoint.limits)
    }

    /// Most calls of the tenant to `service` in flight at once, when the service caps them
    /// (Graph: 4 per app and tenant); `None` when only the global cap applies (Defender).
    pub fn max_concurrent(&self, service: UpstreamService) -> Option<u32> {
        self.endpoint(service)
            .and_then(|endpoint| endpoint.max_concurrent)
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
            .field("metrics", &self.metrics)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// All registrations, sorted by id, shared read-only by every request.
#[derive(Debug, Default)]
pub struct Registry {
    /// Sorted by id, so listings and paging are stable.
    tenants: Vec<Arc<Tenant>>,
    /// Index into `tenants` for O(1) lookups on the hot path (the fast hasher: its keys are the
    /// configuration's; a caller's text is only looked up, never inserted).
    by_id: HashMap<TenantId, usize, foldhash::fast::RandomState>,
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
        // Looked up as text: an id that is not valid is in no registration either.
        self.by_id.get(id).map(|&index| &self.tenants[index])
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
    fn limits_and_caps_are_looked_up_in_the_tenants_endpoints_and_debug_keeps_secrets_out() {
        use crate::policy::testing::{registration, DEFENDER_LIMITS};
        let mut tenant = registration("t", DEFENDER_LIMITS);
        assert_eq!(tenant.limits(UpstreamService::Defender), DEFENDER_LIMITS);
        assert_eq!(tenant.max_concurrent(UpstreamService::Defender), None);
        assert_eq!(
            tenant.limits(UpstreamService::Graph),
            QuotaLimits {
                per_minute: 150,
                per_hour: 9_000
            }
        );
        assert_eq!(tenant.max_concurrent(UpstreamService::Graph), Some(4));
        let endpoints = Arc::make_mut(&mut tenant.endpoints);
        endpoints.remove(&UpstreamService::Graph);
        if let Some(defender) = endpoints.get_mut(&UpstreamService::Defender) {
            defender.base = Arc::new(Url::parse("https://user:hunter2@api.example.test").unwrap());
        }
        assert_eq!(tenant.limits(UpstreamService::Graph), QuotaLimits::NONE);
        assert_eq!(tenant.max_concurrent(UpstreamService::Graph), None);
        let debug = format!("{tenant:?}");
        assert!(debug.contains("https://api.example.test/"), "{debug}");
        for secret in ["not-a-secret", "hunter2", "user"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
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
