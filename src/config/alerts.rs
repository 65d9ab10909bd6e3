//! `[[alerts]]` and `[[webhooks]]`: their serde types, and their validation and resolution into
//! [`AlertsConfig`] (each mistake one problem naming its key).

use super::secret::{read_secret, SecretSource};
use crate::alerts::{
    AlertsConfig, Condition, Reach, Rule, Webhook, WebhookSecret, DEFAULT_TIMEOUT_MS,
};
use crate::model::Metric;
use crate::tenants::Tenant;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

/// Shortest duration of a condition (`within`, `stale_for`, `failing_for`).
const MIN_DURATION: Duration = Duration::from_secs(60);
/// Longest duration of a condition: ten years.
const MAX_DURATION: Duration = Duration::from_secs(3_650 * 86_400);
/// Shortest and longest `[[webhooks]] timeout_ms`.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// One `[[alerts]]` entry: a rule over one metric of the tenants in scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Unique name, in events, the API and metrics.
    pub name: String,
    /// `device`, `exposure` or `secure`.
    pub metric: String,
    /// Tenant ids in scope, or `["*"]`; with `tags`, the union. Default (neither): all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Tags whose tenants are in scope.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Fires while the score is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Fires while the score is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Fires while the score is `points` lower than `within` ago.
    #[serde(default)]
    pub drop: Option<DropSettings>,
    /// Fires while the score is `percent` % lower than `within` ago.
    #[serde(default)]
    pub drop_percent: Option<DropPercentSettings>,
    /// Fires while no fetch has succeeded for this long (`"2h"`).
    #[serde(default)]
    pub stale_for: Option<String>,
    /// Fires while every fetch has failed for this long (`"1h"`).
    #[serde(default)]
    pub failing_for: Option<String>,
}

/// `drop = { points, within }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropSettings {
    /// Points lost.
    pub points: f64,
    /// Compared with the score this long ago (`"7d"`), within the history's retention.
    pub within: String,
}

/// `drop_percent = { percent, within }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropPercentSettings {
    /// Percent lost.
    pub percent: f64,
    /// Compared with the score this long ago (`"7d"`), within the history's retention.
    pub within: String,
}

/// One `[[webhooks]]` entry: an endpoint that receives events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Unique name, in the outbox and `/webhooks/deliveries`.
    pub name: String,
    /// `https://…`, or `http://` to a loopback address only.
    pub url: String,
    /// The Standard Webhooks secret `whsec_<base64>` (`{ env = "…" }` or `{ file = "…" }`).
    pub secret: SecretSource,
    /// The alerts it receives (names); default all.
    #[serde(default)]
    pub alerts: Option<Vec<String>>,
    /// Longest an attempt may take, in milliseconds (default 10000, 100 to 60000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Deliver also to private, link-local, loopback, CGNAT, metadata and other non-public
    /// addresses (default false: public addresses only, checked on the URL and at every
    /// delivery on what its host resolves to). For a receiver inside your own network.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

/// Parses a duration such as `"7d"`, `"2h"`, `"30m"` within the bounds, or names the mistake.
fn duration(key: &str, text: &str, problems: &mut Vec<String>) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(value) if (MIN_DURATION..=MAX_DURATION).contains(&value) => Some(value),
        Ok(_) => {
            problems.push(format!("{key}: must be between 1m and 3650d, not {text:?}"));
            None
        }
        Err(_) => {
            problems.push(format!(
                "{key}: {text:?} is not a duration (write \"30m\", \"2h\" or \"7d\")"
            ));
            None
        }
    }
}

/// Checks `within` against the history's retention.
fn within(
    key: &str,
    text: &str,
    retention_days: u32,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    let value = duration(key, text, problems)?;
    if value > Duration::from_secs(u64::from(retention_days) * 86_400) {
        problems.push(format!(
            "{key}: {text:?} is longer than the history keeps (history.retention_days = {retention_days})"
        ));
        return None;
    }
    Some(value)
}

fn finite(key: &str, value: f64, problems: &mut Vec<String>) -> Option<f64> {
    if value.is_finite() {
        Some(value)
    } else {
        problems.push(format!("{key}: must be a finite number"));
        None
    }
}

/// A drop condition's amount and window, each checked under its own key: the amount
/// `(key, value, at_most)` finite, above 0 and at most `at_most` when given; the window
/// `(key, text)` a duration the history still covers. Both drop conditions share this.
fn drop_of(
    (amount_key, amount, at_most): (&str, f64, Option<f64>),
    (within_key, within_text): (&str, &str),
    retention_days: u32,
    problems: &mut Vec<String>,
) -> Option<(f64, Duration)> {
    let checked = finite(amount_key, amount, problems)
        .filter(|amount| *amount > 0.0 && at_most.is_none_or(|most| *amount <= most));
    if checked.is_none() && amount.is_finite() {
        match at_most {
            None => problems.push(format!("{amount_key}: must be greater than 0")),
            Some(most) => problems.push(format!(
                "{amount_key}: must be greater than 0 and at most {most}"
            )),
        }
    }
    let window = within(within_key, within_text, retention_days, problems);
    checked.zip(window)
}

/// Validates and resolves `[[alerts]]` and `[[webhooks]]` against the registered `tenants`.
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve_alerts(
    alerts: &[AlertSettings],
    webhooks: &[WebhookSettings],
    tenants: &[Tenant],
    history_enabled: bool,
    retention_days: u32,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> AlertsConfig {
    let configured = !alerts.is_empty() || !webhooks.is_empty();
    if !history_enabled && configured {
        problems.push(
            "alerts: alerts keep their state and outbox in the history database; \
             [history] enabled = false leaves them nowhere (remove [[alerts]] and [[webhooks]] \
             or turn history on)"
                .to_owned(),
        );
    }
    let known: HashSet<&str> = tenants.iter().map(|tenant| tenant.id.as_str()).collect();
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for (index, settings) in alerts.iter().enumerate() {
        let key = format!("alerts[{index}] (name {:?})", settings.name);
        let before = problems.len();
        if settings.name.trim().is_empty() {
            problems.push(format!("{key}.name: must not be empty"));
        } else if settings.name.len() > 100 || settings.name.chars().any(char::is_control) {
            problems.push(format!(
                "{key}.name: at most 100 characters, no control characters"
            ));
        }
        if !names.insert(settings.name.as_str()) {
            problems.push(format!("{key}.name: another alert has this name"));
        }
        let metric = Metric::parse(&settings.metric);
        if metric.is_none() {
            problems.push(format!(
                "{key}.metric: {:?} is not a metric ({})",
                settings.metric,
                Metric::names()
            ));
        }
        let all = settings.tenants.iter().any(|id| id == "*");
        for (position, id) in settings.tenants.iter().enumerate() {
            if id != "*" && !known.contains(id.as_str()) {
                problems.push(format!("{key}.tenants[{position}]: no tenant {id:?}"));
            }
        }
        let scope: BTreeSet<String> = tenants
            .iter()
            .filter(|tenant| {
                all || (settings.tenants.is_empty() && settings.tags.is_empty())
                    || settings.tenants.iter().any(|id| id == tenant.id.as_str())
                    || tenant.tags.iter().any(|tag| settings.tags.contains(tag))
            })
            .map(|tenant| tenant.id.to_string())
            .collect();
        let mut conditions = Vec::new();
        if let Some(line) = settings.below {
            conditions.push(finite(&format!("{key}.below"), line, problems).map(Condition::Below));
        }
        if let Some(line) = settings.above {
            conditions.push(finite(&format!("{key}.above"), line, problems).map(Condition::Above));
        }
        if let Some(drop) = &settings.drop {
            let amount: (&str, f64, Option<f64>) =
                (&format!("{key}.drop.points"), drop.points, None);
            let window: (&str, &str) = (&format!("{key}.drop.within"), drop.within.as_str());
            conditions.push(
                drop_of(amount, window, retention_days, problems)
                    .map(|(points, within)| Condition::Drop { points, within }),
            );
        }
        if let Some(drop) = &settings.drop_percent {
            let amount: (&str, f64, Option<f64>) = (
                &format!("{key}.drop_percent.percent"),
                drop.percent,
                Some(100.0),
            );
            let window: (&str, &str) =
                (&format!("{key}.drop_percent.within"), drop.within.as_str());
            conditions.push(
                drop_of(amount, window, retention_days, problems)
                    .map(|(percent, within)| Condition::DropPercent { percent, within }),
            );
        }
        if let Some(text) = &settings.stale_for {
            conditions.push(
                duration(&format!("{key}.stale_for"), text, problems).map(Condition::StaleFor),
            );
        }
        if let Some(text) = &settings.failing_for {
            conditions.push(
                duration(&format!("{key}.failing_for"), text, problems).map(Condition::FailingFor),
            );
        }
        if conditions.len() != 1 {
            problems.push(format!(
                "{key}: give exactly one condition of below, above, drop, drop_percent, stale_for \
                 or failing_for (found {})",
                conditions.len()
            ));
        }
        if let (Some(metric), [Some(condition)]) = (metric, conditions.as_slice()) {
            if problems.len() == before {
                rules.push(Rule {
                    name: settings.name.clone(),
                    metric,
                    tenants: scope,
                    condition: condition.clone(),
                });
            }
        }
    }
    let mut endpoints = HashSet::new();
    let mut resolved = Vec::new();
    for (index, settings) in webhooks.iter().enumerate() {
        let key = format!("webhooks[{index}] (name {:?})", settings.name);
        let before = problems.len();
        if settings.name.trim().is_empty() {
            problems.push(format!("{key}.name: must not be empty"));
        }
        if !endpoints.insert(settings.name.as_str()) {
            problems.push(format!("{key}.name: another webhook has this name"));
        }
        let url = match url::Url::parse(settings.url.trim()) {
            Ok(url) if url.scheme() == "https" => Some(url),
            Ok(url) if url.scheme() == "http" && is_loopback(&url) => Some(url),
            Ok(_) => {
                problems.push(format!(
                    "{key}.url: must be https:// (plain http:// only to a loopback address)"
                ));
                None
            }
            Err(_) => {
                problems.push(format!("{key}.url: not a valid URL"));
                None
            }
        };
        if let Some(refused) = url
            .as_ref()
            .and_then(|url| refused_host(url, settings.allow_private_addresses))
        {
            problems.push(format!("{key}.url: {refused}"));
        }
        if url
            .as_ref()
            .is_some_and(|url| !url.username().is_empty() || url.password().is_some())
        {
            problems.push(format!(
                "{key}.url: must not hold a user or password (the secret signs each request)"
            ));
        }
        let secret_key = format!("{key}.secret");
        let secret = read_secret(&settings.secret, &secret_key, base_dir, env, problems)
            .and_then(|text| {
                let parsed = WebhookSecret::parse(text.expose_secret());
                if parsed.is_none() {
                    problems.push(format!(
                        "{secret_key}: must be a Standard Webhooks secret, whsec_ then the base64 of \
                         {} to {} random bytes (`echo whsec_$(openssl rand -base64 32)`)",
                        WebhookSecret::BYTES.start(),
                        WebhookSecret::BYTES.end()
                    ));
                }
                parsed
            });
        for (position, name) in settings.alerts.iter().flatten().enumerate() {
            if !alerts.iter().any(|alert| &alert.name == name) {
                problems.push(format!("{key}.alerts[{position}]: no alert {name:?}"));
            }
        }
        let timeout_ms = settings.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !TIMEOUT_MS.contains(&timeout_ms) {
            problems.push(format!(
                "{key}.timeout_ms: must be between {} and {}, not {timeout_ms}",
                TIMEOUT_MS.start(),
                TIMEOUT_MS.end()
            ));
        }
        if let (Some(url), Some(secret)) = (url, secret) {
            if problems.len() == before {
                resolved.push(Webhook {
                    name: settings.name.clone(),
                    url,
                    secret,
                    alerts: settings
                        .alerts
                        .as_ref()
                        .map(|names| names.iter().cloned().collect()),
                    timeout: Duration::from_millis(timeout_ms),
                    allow_private_addresses: settings.allow_private_addresses,
                });
            }
        }
    }
    AlertsConfig {
        rules,
        webhooks: resolved,
    }
}

/// Why the host of `url` is out of the endpoint's reach, as far as can be told without
/// resolving it: an address literal out of reach, or `localhost` over https (a loopback name).
/// Names are checked at every delivery, on what they resolve to.
fn refused_host(url: &url::Url, allow_private_addresses: bool) -> Option<String> {
    let reach = Reach::of(url, allow_private_addresses);
    if let Some(refused) = reach.refuses_literal(url) {
        return Some(refused.to_string());
    }
    (reach == Reach::Public && is_loopback(url)).then(|| {
        "localhost is a loopback address: webhooks go to public addresses only \
         (allow_private_addresses = true in the [[webhooks]] entry allows it)"
            .to_owned()
    })
}

/// Whether `url` names a loopback host (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> (Vec<AlertSettings>, Vec<WebhookSettings>) {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            alerts: Vec<AlertSettings>,
            #[serde(default)]
            webhooks: Vec<WebhookSettings>,
        }
        let file: File = toml::from_str(toml).unwrap();
        (file.alerts, file.webhooks)
    }

    /// Resolves `toml` with no tenants, history on (30 days) and `env` as the environment.
    fn resolve(toml: &str, env: &dyn Fn(&str) -> Option<String>) -> (AlertsConfig, Vec<String>) {
        let (alerts, webhooks) = settings(toml);
        let mut problems = Vec::new();
        let config = resolve_alerts(
            &alerts,
            &webhooks,
            &[],
            true,
            30,
            Path::new("."),
            env,
            &mut problems,
        );
        (config, problems)
    }

    fn problems_of(toml: &str) -> Vec<String> {
        let env = |name: &str| {
            (name == "SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned())
        };
        resolve(toml, &env).1
    }

    #[test]
    fn every_mistake_is_named_by_its_key() {
        let problems = problems_of(
            r#"
            [[alerts]]
            name = "two"
            metric = "device"
            below = 300
            above = 600
            [[alerts]]
            name = "none"
            metric = "score"
            [[alerts]]
            name = "far"
            metric = "device"
            drop = { points = 5, within = "90d" }
            [[alerts]]
            name = "bad"
            metric = "device"
            stale_for = "soon"
            [[alerts]]
            name = "bad"
            metric = "device"
            tenants = ["nobody"]
            failing_for = "1h"
            [[webhooks]]
            name = "plain"
            url = "http://example.com/hook"
            secret = { env = "SECRET" }
            alerts = ["missing"]
            timeout_ms = 5
            [[webhooks]]
            name = "weak"
            url = "https://example.com/hook"
            secret = { env = "NOT_SET" }
            "#,
        );
        let text = problems.join("\n");
        for expected in [
            "alerts[0] (name \"two\"): give exactly one condition",
            "alerts[1] (name \"none\").metric: \"score\" is not a metric",
            "alerts[1] (name \"none\"): give exactly one condition of below, above, drop, drop_percent, stale_for or failing_for (found 0)",
            "alerts[2] (name \"far\").drop.within: \"90d\" is longer than the history keeps",
            "alerts[3] (name \"bad\").stale_for: \"soon\" is not a duration",
            "alerts[4] (name \"bad\").name: another alert has this name",
            "alerts[4] (name \"bad\").tenants[0]: no tenant \"nobody\"",
            "webhooks[0] (name \"plain\").url: must be https://",
            "webhooks[0] (name \"plain\").alerts[0]: no alert \"missing\"",
            "webhooks[0] (name \"plain\").timeout_ms: must be between 100 and 60000, not 5",
            "webhooks[1] (name \"weak\").secret.env: environment variable NOT_SET is not set",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn a_secret_that_is_not_whsec_is_refused_without_being_quoted() {
        let toml = r#"
            [[webhooks]]
            name = "psa"
            url = "http://127.0.0.1:9/hook"
            secret = { env = "PLAIN" }
            "#;
        let env = |_: &str| Some("hunter2-not-a-whsec".to_owned());
        let (_, problems) = resolve(toml, &env);
        let text = problems.join("\n");
        assert!(
            text.contains("webhooks[0] (name \"psa\").secret: must be a Standard Webhooks secret"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn https_to_a_private_link_local_loopback_or_metadata_address_is_refused_unless_allowed() {
        let hook = |url: &str, allow: bool| {
            format!(
                "[[webhooks]]\nname = \"inside\"\nurl = \"{url}\"\nsecret = {{ env = \"SECRET\" }}\n\
                 allow_private_addresses = {allow}\n"
            )
        };
        for (url, what) in [
            (
                "https://169.254.169.254/",
                "169.254.169.254 is a cloud metadata address",
            ),
            ("https://10.0.0.1/hook", "10.0.0.1 is a private address"),
            ("https://[fe80::1]/hook", "fe80::1 is a link-local address"),
            (
                "https://[fd00::1]/hook",
                "fd00::1 is a private (unique local) address",
            ),
            ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
            (
                "https://localhost:8443/hook",
                "localhost is a loopback address",
            ),
            (
                "https://100.64.1.1/hook",
                "100.64.1.1 is a shared (CGNAT) address",
            ),
            ("https://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
            (
                "https://[::ffff:192.168.0.1]/",
                "::ffff:192.168.0.1 is a private address",
            ),
        ] {
            let problems = problems_of(&hook(url, false)).join("\n");
            assert!(
                problems.contains(&format!("webhooks[0] (name \"inside\").url: {what}"))
                    && problems.contains("allow_private_addresses = true"),
                "{url}: {problems}"
            );
            let env = |_: &str| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
            let (config, problems) = resolve(&hook(url, true), &env);
            assert!(problems.is_empty(), "{url}: {problems:?}");
            assert!(config.webhooks[0].allow_private_addresses);
        }
        // Public addresses and names pass (names are checked at delivery).
        for url in ["https://20.42.65.92/hook", "https://hooks.example.com/hook"] {
            assert!(problems_of(&hook(url, false)).is_empty(), "{url}");
        }
        // Plain http stays loopback only, with or without the setting.
        assert!(problems_of(&hook("http://127.0.0.1:9/hook", false)).is_empty());
        let problems = problems_of(&hook("http://10.0.0.1/hook", true)).join("\n");
        assert!(problems.contains("must be https://"), "{problems}");
    }

    #[test]
    fn a_valid_rule_and_loopback_webhook_resolve() {
        let toml = r#"
            [[alerts]]
            name = "drop"
            metric = "secure"
            drop_percent = { percent = 5, within = "7d" }
            [[webhooks]]
            name = "local"
            url = "http://localhost:8099/hook"
            secret = { env = "SECRET" }
            "#;
        let env = |_: &str| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let (config, problems) = resolve(toml, &env);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.rules[0].condition,
            Condition::DropPercent {
                percent: 5.0,
                within: Duration::from_secs(7 * 86_400)
            }
        );
        assert_eq!(config.webhooks[0].timeout, Duration::from_secs(10));
        assert!(config.webhooks[0].receives("anything"));
    }
}
