//! `[auth]` and `[[api_keys]]`: caller authentication's serde types, their checks, and the API
//! keys resolved into the [`KeyRing`] (each key may name only tenants that resolved).
//! `[auth.entra]` (Entra ID callers) is in `entra`.

pub mod entra;

use super::checks::check_range;
use super::limits;
use super::server::ServerSettings;
use crate::auth::{ApiKey, KeyRing, Scope};
use crate::tenants::{Tenant, TenantId};
use serde::Deserialize;
use std::collections::HashSet;

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
    /// `[auth.entra]`: Entra ID access tokens accepted beside API keys; absent: keys only.
    pub entra: Option<entra::EntraSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default_requests_per_minute: 600,
            allow_unauthenticated_non_loopback: false,
            entra: None,
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

/// `[auth]`: the default key rate, and authentication off only on loopback unless allowed.
pub(super) fn validate_auth(
    auth: &AuthSettings,
    server: &ServerSettings,
    problems: &mut Vec<String>,
) {
    check_range(
        "auth.default_requests_per_minute",
        auth.default_requests_per_minute.into(),
        1,
        limits::MAX_KEY_PER_MINUTE.into(),
        problems,
    );
    // An IPv4-mapped IPv6 loopback (::ffff:127.0.0.1) is loopback too.
    let loopback = server.bind.ip().to_canonical().is_loopback();
    if !auth.enabled && !loopback && !auth.allow_unauthenticated_non_loopback {
        problems.push(format!(
            "auth.enabled: authentication is off but server.bind ({}) is not a loopback address, so anyone who can reach it would read every tenant's score; turn authentication on, bind to 127.0.0.1 or [::1], or set [auth] allow_unauthenticated_non_loopback = true if another layer authenticates callers",
            server.bind
        ));
    }
}

/// The callers' keys, checked against the resolved tenants (a key may only name known ids).
pub(super) fn resolve_keys(
    keys: &[ApiKeySettings],
    auth: &AuthSettings,
    tenants: &[Tenant],
    problems: &mut Vec<String>,
) -> KeyRing {
    if auth.enabled && keys.is_empty() && auth.entra.is_none() {
        problems.push(
            "auth.enabled: authentication is on but no [[api_keys]] (nor [auth.entra]) are configured; add a key (`scoregate keygen` prints one) or set [auth] enabled = false on a loopback-only set-up"
                .to_owned(),
        );
    }
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
        let scope = resolve_scope(
            &key,
            &settings.tenants,
            &settings.tags,
            settings.operator,
            tenants,
            problems,
        );
        if let Some(why) = crate::auth::placeholder_digest(&digest) {
            problems.push(format!("{key}.sha256: {why}; run `scoregate keygen --name {} --tenants …` (or --tags …), give the key to the caller and paste the digest it prints", settings.name));
        }
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

/// The scope of a caller (an API key or an Entra caller) named `key`: tenant ids (known ones
/// only) or `["*"]`, and tags; operators must see every tenant.
pub(super) fn resolve_scope(
    key: &str,
    ids: &[String],
    tags: &[String],
    operator: bool,
    tenants: &[Tenant],
    problems: &mut Vec<String>,
) -> Scope {
    let known: HashSet<&str> = tenants.iter().map(|tenant| tenant.id.as_str()).collect();
    let all = ids.iter().any(|id| id == "*");
    if all && ids.len() > 1 {
        problems.push(format!(
            "{key}.tenants: \"*\" already grants every tenant; list nothing else"
        ));
    }
    for (position, id) in ids.iter().enumerate() {
        if id != "*" && !known.contains(id.as_str()) {
            problems.push(format!("{key}.tenants[{position}]: no tenant {id:?}"));
        }
    }
    if ids.is_empty() && tags.is_empty() {
        problems.push(format!(
            "{key}: grants no tenant; set tenants (ids or [\"*\"]) or tags"
        ));
    }
    if operator && !all {
        problems.push(format!("{key}.operator: operators read /metrics, which names every tenant, so they need tenants = [\"*\"]"));
    }
    if all {
        Scope::All
    } else {
        Scope::Some {
            tenants: ids
                .iter()
                .filter_map(|id| TenantId::parse(id).ok())
                .collect(),
            tags: tags.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{
        env, problems, tempdir, tenant, with_key, write, CLIENT, DIGEST, TENANT,
    };
    use crate::config::Config;

    #[test]
    fn authentication_off_on_a_non_loopback_address_is_refused_unless_allowed() {
        let dir = tempdir();
        for bind in ["0.0.0.0:8080", "192.0.2.10:8080", "[::]:8080"] {
            let path = write(&dir, "a.toml", &format!("[server]\nbind = \"{bind}\"\n"));
            let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
            assert!(
            all.contains(&format!(
                "auth.enabled: authentication is off but server.bind ({bind}) is not a loopback address"
            )),
            "{all}"
        );
            assert!(
                all.contains("[auth] allow_unauthenticated_non_loopback = true"),
                "{all}"
            );
            let allowed = Config::load_with_env(
                &path,
                env(&[(
                    "SCOREGATE__AUTH__ALLOW_UNAUTHENTICATED_NON_LOOPBACK",
                    "true",
                )]),
            );
            assert!(allowed.is_ok(), "{bind}");
        }
        for bind in [
            "127.0.0.1:8080",
            "127.3.4.5:8080",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            let path = write(&dir, "a.toml", &format!("[server]\nbind = \"{bind}\"\n"));
            assert!(Config::load_with_env(&path, env(&[])).is_ok(), "{bind}");
        }
        // With authentication on, any address is fine.
        let path = write(
            &dir,
            "a.toml",
            &with_key(&format!(
                "[server]\nbind = \"0.0.0.0:8080\"\n{}",
                tenant("a", TENANT, CLIENT, "client_secret = { env = \"S\" }")
            )),
        );
        assert!(Config::load_with_env(&path, env(&[("S", "x")])).is_ok());
    }

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
        crate::auth::digest_hex("gold-key")
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
            "api_keys[1] (name \"x\").operator: operators read /metrics",
            "api_keys[2] (name \"empty\").sha256: another key has this digest",
            "api_keys[2] (name \"empty\"): grants no tenant",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }
}
