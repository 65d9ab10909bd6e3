//! `[auth.entra]` and `[[auth.entra.callers]]`: callers with Entra ID access tokens. The serde
//! types, their checks, and their resolution into [`EntraConfig`] (each caller may name only
//! tenants that resolved, as an API key).

use super::super::checks::{check_https, check_range};
use super::super::limits;
use super::{resolve_scope, AuthSettings};
use crate::auth::entra::{CallerMatch, EntraCaller, EntraConfig, GRAPH_APP_ID, GRAPH_RESOURCE};
use crate::tenants::{Cloud, Tenant};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use url::Url;

/// Longest allowed clock skew on `exp`/`nbf`, seconds.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// `[auth.entra]`: which Entra tokens are accepted, and who their callers are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSettings {
    /// The MSP's own Entra tenant (GUID), whose tokens are accepted.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Instead of `tenant_id`: the tenants (GUIDs) of a multi-tenant caller app.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Accepted `aud` values: scoregate's client id (v2 tokens) and/or App ID URI (v1 tokens).
    pub audiences: Vec<String>,
    /// The cloud whose authority issues the tokens (default `commercial`); `custom` needs
    /// `authority_host`.
    #[serde(default = "commercial")]
    pub cloud: Cloud,
    /// The authority for `cloud = "custom"` (the emulator's base URL); v1 issuers then live
    /// under it too.
    #[serde(default)]
    pub authority_host: Option<Url>,
    /// Clock skew allowed on `exp` and `nbf`, seconds (default 60, at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Accept delegated tokens (`scp`, a signed-in user) as well; they still need a mapped role.
    #[serde(default)]
    pub accept_delegated: bool,
    /// The callers, matched in order.
    #[serde(default)]
    pub callers: Vec<EntraCallerSettings>,
}

fn commercial() -> Cloud {
    Cloud::Commercial
}

fn default_leeway() -> u64 {
    60
}

/// One `[[auth.entra.callers]]` entry: what a token must carry, and what it then grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraCallerSettings {
    /// Name for logs and metrics.
    pub name: String,
    /// An app role in the token's `roles` (e.g. `Scores.Read.All`).
    #[serde(default)]
    pub role: Option<String>,
    /// Or: the calling application's client id.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Or: the caller's object id (a service principal or managed identity).
    #[serde(default)]
    pub object_id: Option<String>,
    /// Tenant ids the caller may see, or `["*"]` for all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Tags whose tenants the caller may see.
    #[serde(default)]
    pub tags: Vec<String>,
    /// May read operator data (`/metrics`, `/webhooks/deliveries`); requires `tenants = ["*"]`.
    #[serde(default)]
    pub operator: bool,
    /// Requests per minute (default `auth.default_requests_per_minute`).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// Checks `[auth.entra]` and resolves it; `None` when absent or wrong (problems then say why).
pub(in crate::config) fn resolve_entra(
    auth: &AuthSettings,
    tenants: &[Tenant],
    problems: &mut Vec<String>,
) -> Option<EntraConfig> {
    let entra = auth.entra.as_ref()?;
    let before = problems.len();
    let allowed = allowed_tenants(entra, problems);
    if entra.audiences.is_empty() {
        problems.push("auth.entra.audiences: list scoregate's client id and/or App ID URI".into());
    }
    for (index, audience) in entra.audiences.iter().enumerate() {
        let graph = audience.eq_ignore_ascii_case(GRAPH_APP_ID)
            || audience
                .trim_end_matches('/')
                .eq_ignore_ascii_case(GRAPH_RESOURCE);
        if graph {
            problems.push(format!("auth.entra.audiences[{index}]: Microsoft Graph's tokens are never accepted; use scoregate's own client id or App ID URI"));
        } else if audience.trim().is_empty() {
            problems.push(format!("auth.entra.audiences[{index}]: must not be empty"));
        }
    }
    check_range(
        "auth.entra.leeway_seconds",
        entra.leeway_seconds,
        0,
        MAX_LEEWAY_SECONDS,
        problems,
    );
    let authority = authority(entra, problems);
    if entra.callers.is_empty() {
        problems.push("auth.entra.callers: no caller is mapped, so every token would be refused; add [[auth.entra.callers]] entries".into());
    }
    let mut names = HashSet::new();
    let mut callers = Vec::new();
    for (index, settings) in entra.callers.iter().enumerate() {
        let key = format!("auth.entra.callers[{index}] (name {:?})", settings.name);
        let before = problems.len();
        if settings.name.trim().is_empty() {
            problems.push(format!("{key}.name: must not be empty"));
        }
        if !names.insert(settings.name.as_str()) {
            problems.push(format!("{key}.name: another caller has this name"));
        }
        let matcher = match (&settings.role, &settings.app_id, &settings.object_id) {
            (Some(role), None, None) if !role.trim().is_empty() => {
                Some(CallerMatch::Role(role.clone()))
            }
            (None, Some(id), None) if uuid::Uuid::parse_str(id).is_ok() => {
                Some(CallerMatch::AppId(id.to_ascii_lowercase()))
            }
            (None, None, Some(id)) if uuid::Uuid::parse_str(id).is_ok() => {
                Some(CallerMatch::ObjectId(id.to_ascii_lowercase()))
            }
            _ => {
                problems.push(format!(
                    "{key}: set exactly one of role (an app role), app_id or object_id (GUIDs)"
                ));
                None
            }
        };
        let scope = resolve_scope(
            &key,
            &settings.tenants,
            &settings.tags,
            settings.operator,
            tenants,
            problems,
        );
        let per_minute = settings
            .requests_per_minute
            .unwrap_or(auth.default_requests_per_minute);
        if let Some(own) = settings.requests_per_minute {
            check_range(
                &format!("{key}.requests_per_minute"),
                own.into(),
                1,
                limits::MAX_KEY_PER_MINUTE.into(),
                problems,
            );
        }
        if problems.len() != before {
            continue;
        }
        let Some(matcher) = matcher else { continue };
        if let Some(caller) = EntraCaller::new(
            settings.name.clone(),
            matcher,
            scope,
            settings.operator,
            per_minute,
        ) {
            callers.push(Arc::new(caller));
        }
    }
    let (authority, v1_issuer_base) = authority?;
    (problems.len() == before).then(|| EntraConfig {
        tenants: allowed,
        audiences: entra.audiences.clone(),
        authority,
        v1_issuer_base,
        leeway_seconds: entra.leeway_seconds,
        accept_delegated: entra.accept_delegated,
        callers,
    })
}

/// `tenant_id` or `tenants`: GUIDs, lower-cased.
fn allowed_tenants(entra: &EntraSettings, problems: &mut Vec<String>) -> Vec<String> {
    let (key, listed): (&str, Vec<&String>) = match (&entra.tenant_id, entra.tenants.is_empty()) {
        (Some(one), true) => ("auth.entra.tenant_id", vec![one]),
        (None, false) => ("auth.entra.tenants", entra.tenants.iter().collect()),
        (Some(_), false) => {
            problems.push(
                "auth.entra: set tenant_id or tenants (a multi-tenant caller app), not both".into(),
            );
            return Vec::new();
        }
        (None, true) => {
            problems.push(
                "auth.entra.tenant_id: required (the GUID of the Entra tenant that issues the callers' tokens), or tenants = [...]"
                    .into(),
            );
            return Vec::new();
        }
    };
    let mut allowed = Vec::new();
    for (index, id) in listed.into_iter().enumerate() {
        match uuid::Uuid::parse_str(id) {
            // Hyphenated lower case, as Entra writes `tid`.
            Ok(guid) => allowed.push(guid.hyphenated().to_string()),
            Err(_) if key == "auth.entra.tenant_id" => {
                problems.push(format!("{key}: must be a tenant GUID"));
            }
            Err(_) => problems.push(format!("{key}[{index}]: must be a tenant GUID")),
        }
    }
    allowed
}

/// The authority and the base of v1 issuers for the cloud.
fn authority(entra: &EntraSettings, problems: &mut Vec<String>) -> Option<(Url, Url)> {
    match (entra.cloud, &entra.authority_host) {
        (Cloud::Custom, Some(host)) => {
            check_https("auth.entra.authority_host", Some(host), problems);
            let mut host = host.clone();
            if !host.path().ends_with('/') {
                let path = format!("{}/", host.path());
                host.set_path(&path);
            }
            Some((host.clone(), host))
        }
        (Cloud::Custom, None) => {
            problems.push("auth.entra.authority_host: required with cloud = \"custom\"".into());
            None
        }
        (_, Some(_)) => {
            problems.push(
                "auth.entra.authority_host: only with cloud = \"custom\" (other clouds have their own)"
                    .into(),
            );
            None
        }
        (cloud, None) => {
            let host = cloud.authority_host()?;
            let authority = Url::parse(&format!("{host}/")).ok()?;
            // Microsoft's clouds write v1 issuers as sts.windows.net/{tid}/.
            let v1 = Url::parse("https://sts.windows.net/").ok()?;
            Some((authority, v1))
        }
    }
}

/// The `[auth.entra]` lines of `check-config`'s summary: tenants, audiences and each mapping.
pub(in crate::config) fn summary(entra: &EntraConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  entra: tenant(s) {}, audience(s) {}, authority {}, leeway {} s, delegated tokens {}",
        entra.tenants.join(", "),
        entra.audiences.join(", "),
        entra.authority,
        entra.leeway_seconds,
        if entra.accept_delegated {
            "accepted"
        } else {
            "refused"
        }
    );
    for caller in &entra.callers {
        let scope = match &caller.scope {
            crate::auth::Scope::All => "all tenants".to_owned(),
            crate::auth::Scope::Some { tenants, tags } => {
                let mut tenants: Vec<&str> = tenants.iter().map(|id| id.as_str()).collect();
                tenants.sort_unstable();
                let mut tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                tags.sort_unstable();
                format!(
                    "tenants [{}], tags [{}]",
                    tenants.join(", "),
                    tags.join(", ")
                )
            }
        };
        let _ = writeln!(
            out,
            "  entra caller {}: {} -> {}{}, {} requests/min",
            caller.name,
            caller.matcher,
            scope,
            if caller.operator { ", operator" } else { "" },
            caller.requests_per_minute
        );
    }
    out
}

#[cfg(test)]
mod tests;
