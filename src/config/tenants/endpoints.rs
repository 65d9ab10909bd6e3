//! A tenant's endpoints (cloud, geo, authority host, API base, scope) and sources (metrics and
//! Microsoft Graph settings): its own overrides, else `[upstream]`'s, else the cloud's.

use super::TenantSettings;
use crate::config::checks::{check_https, check_metrics, check_range, check_scope};
use crate::config::limits;
use crate::config::upstream::UpstreamSettings;
use crate::model::Metric;
use crate::tenants::{Cloud, Geo, TenantSources};
use std::sync::Arc;
use url::Url;

/// A tenant's cloud, geo, authority host, API base and token scope.
pub(super) type Endpoints = (Cloud, Option<Geo>, Url, Url, String);

/// The tenant's endpoints: its own overrides, else `[upstream]`'s (same cloud only), else the
/// cloud's.
pub(super) fn resolve_endpoints(
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

/// The tenant's metrics and Microsoft Graph settings: its own overrides, else `[upstream]`'s
/// (the Graph host only for the same cloud), else the cloud's. A Graph host is required only
/// when the tenant has `secure`.
pub(super) fn resolve_sources(
    settings: &TenantSettings,
    upstream: &UpstreamSettings,
    cloud: Cloud,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<TenantSources> {
    let before = problems.len();
    let metrics = match &settings.metrics {
        Some(own) => {
            check_metrics(&format!("{key}.metrics"), own, problems);
            own.clone()
        }
        None => upstream.metrics.clone(),
    };
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
    let inherits = settings.cloud.is_none();
    let graph_base = settings
        .graph_base
        .clone()
        .or_else(|| inherits.then(|| upstream.graph_base.clone()).flatten())
        .or_else(|| cloud.graph_base().and_then(|base| Url::parse(base).ok()));
    if metrics.contains(&Metric::Secure) && graph_base.is_none() {
        problems.push(format!(
            "{key}: the secure metric on cloud \"custom\" needs graph_base (in [upstream] or on the tenant)"
        ));
    }
    // The emulated (and any custom) Entra knows Graph by its commercial name; a sovereign
    // cloud's Graph host is also its token resource.
    let graph_scope = settings
        .graph_scope
        .clone()
        .or_else(|| upstream.graph_scope.clone())
        .unwrap_or_else(|| match (cloud, cloud.graph_base()) {
            (Cloud::Custom, _) | (_, None) => crate::wire::GRAPH_SCOPE.to_owned(),
            (_, Some(base)) => format!("{base}/.default"),
        });
    let mut ordered: Vec<Metric> = Metric::ALL
        .into_iter()
        .filter(|metric| metrics.contains(metric))
        .collect();
    ordered.dedup();
    (problems.len() == before).then(|| TenantSources {
        metrics: ordered,
        graph_base: graph_base.map(Arc::new),
        graph_scope: graph_scope.into(),
        graph_per_minute: settings
            .graph_requests_per_minute
            .unwrap_or(upstream.graph_requests_per_minute),
        graph_max_concurrent: settings
            .graph_max_concurrent
            .unwrap_or(upstream.graph_max_concurrent),
    })
}
