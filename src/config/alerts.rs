//! `[[alerts]]` and `[[webhooks]]`: their serde types, and their validation and resolution into
//! [`AlertsConfig`] (each mistake one problem naming its key).

use super::secret::{read_secret, SecretSource};
use crate::alerts::{
    AlertsConfig, Condition, Reach, Rule, Webhook, WebhookSecret, DEFAULT_TIMEOUT_MS,
};
use crate::controls::Category;
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
    /// Fires while a control that was done for the tenant is no longer (`metric = "secure"`).
    #[serde(default)]
    pub control_regressed: Option<ControlRegressedSettings>,
}

/// `control_regressed = { controls, categories }`, both optional: the controls watched.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRegressedSettings {
    /// Only these control ids (Graph's, e.g. `"MFARegistrationV2"`); default all.
    #[serde(default)]
    pub controls: Option<Vec<String>>,
    /// Only controls of these categories (`identity`, `data`, `device`, `apps`,
    /// `infrastructure`); default all.
    #[serde(default)]
    pub categories: Option<Vec<String>>,
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

/// Most entries of `control_regressed.controls` and of `.categories`.
const MAX_WATCHED: usize = 500;

/// `control_regressed`, each list checked under its key: not empty when given, at most
/// [`MAX_WATCHED`] entries, each a control id or a known category.
fn control_regressed(
    key: &str,
    settings: &ControlRegressedSettings,
    problems: &mut Vec<String>,
) -> Option<Condition> {
    let before = problems.len();
    let mut bounded = |name: &str, list: Option<&Vec<String>>| -> Vec<String> {
        match list {
            Some(list) if list.is_empty() => problems.push(format!(
                "{key}.{name}: must not be empty (leave it out to watch all)"
            )),
            Some(list) if list.len() > MAX_WATCHED => problems.push(format!(
                "{key}.{name}: at most {MAX_WATCHED} entries, not {}",
                list.len()
            )),
            _ => {}
        }
        list.cloned().unwrap_or_default()
    };
    let controls = bounded("controls", settings.controls.as_ref());
    let categories = bounded("categories", settings.categories.as_ref());
    for (position, id) in controls.iter().enumerate() {
        if !crate::history::valid_control_id(id) {
            problems.push(format!(
                "{key}.controls[{position}]: {id:?} is not a control id (1 to {} letters, digits, \
                 `_`, `-`, `.` or `:`)",
                crate::history::MAX_CONTROL_ID
            ));
        }
    }
    let mut resolved = BTreeSet::new();
    for (position, name) in categories.iter().enumerate() {
        match Category::parse(name) {
            Some(category) => {
                resolved.insert(category);
            }
            None => problems.push(format!(
                "{key}.categories[{position}]: {name:?} is not a category (one of {})",
                Category::ALL
                    .iter()
                    .map(|category| category.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    (problems.len() == before).then(|| Condition::ControlRegressed {
        controls: controls.into_iter().collect(),
        categories: resolved,
    })
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
        if let Some(watched) = &settings.control_regressed {
            let key = format!("{key}.control_regressed");
            if metric.is_some_and(|metric| metric != Metric::Secure) {
                problems.push(format!(
                    "{key}: controls are of the secure score; set metric = \"secure\""
                ));
            }
            conditions.push(control_regressed(&key, watched, problems));
        }
        if conditions.len() != 1 {
            problems.push(format!(
                "{key}: give exactly one condition of below, above, drop, drop_percent, stale_for, \
                 failing_for or control_regressed (found {})",
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
mod tests;
