//! A tenant's endpoints: its hosts and Defender's (`api_base`, `scope`), Microsoft Graph's
//! (`graph_base`, `graph_scope`, `graph_requests_per_minute`, `graph_max_concurrent`) and its
//! metrics, each from the tenant's own keys, else `[upstream]`'s, else the cloud's.

use super::{Shared, TenantSettings};
use crate::config::checks::{check_https, check_metrics, check_range, check_scope};
use crate::config::limits;
use crate::config::upstream::UpstreamSettings;
use crate::model::{Metric, UpstreamService};
use crate::tenants::{Cloud, Endpoint, Geo, QuotaLimits};
use url::Url;

/// A tenant's cloud, geo, authority host, and Defender's API base and token scope.
pub(super) type Hosts = (Cloud, Option<Geo>, Url, Url, String);

/// The tenant's hosts: its own overrides, else `[upstream]`'s (same cloud only), else the
/// cloud's.
pub(super) fn resolve_hosts(
    settings: &TenantSettings,
    upstream: &UpstreamSettings,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<Hosts> {
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

/// The tenant's metrics, in [`Metric::ALL`] order: its own list (problems reported), else
/// `[upstream]`'s.
pub(super) fn resolve_metrics(
    settings: &TenantSettings,
    upstream: &UpstreamSettings,
    key: &str,
    problems: &mut Vec<String>,
) -> Vec<Metric> {
    let metrics = match &settings.metrics {
        Some(own) => {
            check_metrics(&format!("{key}.metrics"), own, problems);
            own.clone()
        }
        None => upstream.metrics.clone(),
    };
    let mut ordered: Vec<Metric> = Metric::ALL
        .into_iter()
        .filter(|metric| metrics.contains(metric))
        .collect();
    ordered.dedup();
    ordered
}

/// The configuration key of `service`'s base URL, for problems that name it.
pub(super) fn base_key(service: UpstreamService) -> &'static str {
    // One arm per service: each keeps the configuration key it always had.
    match service {
        UpstreamService::Defender => "api_base",
        UpstreamService::Graph => "graph_base",
    }
}

/// The tenant's Microsoft Graph endpoint: its own overrides, else `[upstream]`'s (the Graph host
/// only for the same cloud), else the cloud's. `None` after a problem, or when a custom cloud
/// names no Graph host (needed only by a metric read from Graph).
pub(super) fn resolve_graph(
    settings: &TenantSettings,
    upstream: &UpstreamSettings,
    cloud: Cloud,
    key: &str,
    problems: &mut Vec<String>,
    shared: &mut Shared,
) -> Option<Endpoint> {
    let before = problems.len();
    check_https(
        &format!("{key}.graph_base"),
        settings.graph_base.as_ref(),
        problems,
    );
    if let Some(scope) = &settings.graph_scope {
        check_scope(&format!("{key}.graph_scope"), scope, problems);
    }
    for (field, value, max) in [
        (
            "graph_requests_per_minute",
            settings.graph_requests_per_minute,
            limits::MAX_UPSTREAM_PER_MINUTE,
        ),
        (
            "graph_max_concurrent",
            settings.graph_max_concurrent,
            limits::MAX_GRAPH_CONCURRENT,
        ),
    ] {
        if let Some(value) = value {
            check_range(
                &format!("{key}.{field}"),
                value.into(),
                1,
                max.into(),
                problems,
            );
        }
    }
    if problems.len() != before {
        return None;
    }
    let inherits = settings.cloud.is_none();
    let base = settings
        .graph_base
        .clone()
        .or_else(|| inherits.then(|| upstream.graph_base.clone()).flatten())
        .or_else(|| cloud.graph_base().and_then(|base| Url::parse(base).ok()))?;
    // The emulated (and any custom) Entra knows Graph by its commercial name; a sovereign
    // cloud's Graph host is also its token resource.
    let scope = settings
        .graph_scope
        .clone()
        .or_else(|| upstream.graph_scope.clone())
        .unwrap_or_else(|| match (cloud, cloud.graph_base()) {
            (Cloud::Custom, _) | (_, None) => crate::wire::GRAPH_SCOPE.to_owned(),
            (_, Some(base)) => format!("{base}/.default"),
        });
    let per_minute = settings
        .graph_requests_per_minute
        .unwrap_or(upstream.graph_requests_per_minute);
    Some(Endpoint {
        base: shared.url(base),
        scope: shared.text(scope),
        // Graph counts per minute (and per ten minutes, far above 150/min × 10); the hour
        // window is left wide for it.
        limits: QuotaLimits {
            per_minute,
            per_hour: per_minute.saturating_mul(60),
        },
        max_concurrent: Some(
            settings
                .graph_max_concurrent
                .unwrap_or(upstream.graph_max_concurrent),
        ),
    })
}
