//! The resolved configuration of alerts: `[[alerts]]` rules and their conditions, `[[webhooks]]`
//! endpoints and their signing secrets (never shown by `Debug`).

use super::Reach;
use crate::controls::Category;
use crate::model::Metric;
use std::collections::BTreeSet;
use std::time::Duration;
use zeroize::Zeroizing;

/// The condition of a rule: exactly one per `[[alerts]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Fires while the value is below the line.
    Below(f64),
    /// Fires while the value is above the line.
    Above(f64),
    /// Fires while the value is at least `points` lower than `within` ago.
    Drop {
        /// Points lost.
        points: f64,
        /// Compared with the value this long ago.
        within: Duration,
    },
    /// Fires while the value is at least `percent` % lower than `within` ago.
    DropPercent {
        /// Percent lost.
        percent: f64,
        /// Compared with the value this long ago.
        within: Duration,
    },
    /// Fires while no fetch has succeeded for this long.
    StaleFor(Duration),
    /// Fires while every fetch has failed for this long.
    FailingFor(Duration),
    /// Fires while a control that was done for the tenant is no longer (`secure` only);
    /// evaluated on each new set of the tenant's controls.
    ControlRegressed {
        /// Only these control ids; empty for all.
        controls: BTreeSet<String>,
        /// Only controls of these categories; empty for all.
        categories: BTreeSet<Category>,
    },
}

impl Condition {
    /// Whether the timer evaluates it (it changes with time alone).
    pub fn is_timed(&self) -> bool {
        matches!(self, Self::StaleFor(_) | Self::FailingFor(_))
    }

    /// A stable text of the definition: a reload that changes it resolves the rule's states.
    fn fingerprint(&self, metric: Metric) -> String {
        let condition = match self {
            Self::Below(line) => format!("below={line}"),
            Self::Above(line) => format!("above={line}"),
            Self::Drop { points, within } => format!("drop={points}/{}", within.as_secs()),
            Self::DropPercent { percent, within } => {
                format!("drop_percent={percent}/{}", within.as_secs())
            }
            Self::StaleFor(after) => format!("stale_for={}", after.as_secs()),
            Self::FailingFor(after) => format!("failing_for={}", after.as_secs()),
            Self::ControlRegressed {
                controls,
                categories,
            } => {
                let controls: Vec<&str> = controls.iter().map(String::as_str).collect();
                let categories: Vec<&str> = categories.iter().map(|c| c.as_str()).collect();
                format!(
                    "control_regressed={}/{}",
                    controls.join(","),
                    categories.join(",")
                )
            }
        };
        format!("{}:{condition}", metric.as_str())
    }
}

/// One `[[alerts]]` entry, resolved: its scope is the set of tenant ids it covers now.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's name (unique; in events and the API).
    pub name: String,
    /// Which metric it watches.
    pub metric: Metric,
    /// The tenants in scope (resolved against the registry with it, at load and reload).
    pub tenants: BTreeSet<String>,
    /// The condition.
    pub condition: Condition,
}

impl Rule {
    /// The definition's fingerprint, stored beside each state.
    pub fn fingerprint(&self) -> String {
        self.condition.fingerprint(self.metric)
    }
}

/// A Standard Webhooks signing secret: the bytes after `whsec_`, base64-decoded. Zeroized on
/// drop; `Debug` never shows it.
#[derive(Clone, PartialEq)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// Shortest and longest secret, in decoded bytes (the specification's recommendation).
    pub const BYTES: std::ops::RangeInclusive<usize> = 24..=64;

    /// Parses `whsec_<base64>`; `None` (the caller names the key) when it is not one or its
    /// length is outside [`Self::BYTES`].
    pub fn parse(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let encoded = text.trim().strip_prefix("whsec_")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        Self::BYTES
            .contains(&bytes.len())
            .then(|| Self(Zeroizing::new(bytes)))
    }

    /// A new random secret (32 bytes) and its `whsec_…` text, for `scoregate demo`'s receiver.
    pub fn generate() -> (secrecy::SecretString, Self) {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut bytes = Zeroizing::new(vec![0_u8; 32]);
        rand::rng().fill_bytes(&mut bytes);
        let text = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes.as_slice())
        );
        (secrecy::SecretString::from(text), Self(bytes))
    }

    /// The decoded key.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// One `[[webhooks]]` entry, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// The endpoint's name (unique; in the outbox and `/webhooks/deliveries`).
    pub name: String,
    /// Where events are POSTed.
    pub url: url::Url,
    /// The signing secret.
    pub secret: WebhookSecret,
    /// The alerts it receives; `None` for all.
    pub alerts: Option<BTreeSet<String>>,
    /// Longest an attempt may take.
    pub timeout: Duration,
    /// Whether it may be delivered to private, link-local, loopback and other non-public
    /// addresses (`allow_private_addresses`; off: public addresses only).
    pub allow_private_addresses: bool,
}

impl Webhook {
    /// The addresses its deliveries may connect to.
    pub fn reach(&self) -> Reach {
        Reach::of(&self.url, self.allow_private_addresses)
    }

    /// Whether it receives the events of `alert`.
    pub fn receives(&self, alert: &str) -> bool {
        self.alerts
            .as_ref()
            .is_none_or(|names| names.contains(alert))
    }
}

/// `[[alerts]]` and `[[webhooks]]`, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertsConfig {
    /// The rules.
    pub rules: Vec<Rule>,
    /// The endpoints.
    pub webhooks: Vec<Webhook>,
}

impl AlertsConfig {
    /// The endpoint named `name`.
    pub fn webhook(&self, name: &str) -> Option<&Webhook> {
        self.webhooks.iter().find(|webhook| webhook.name == name)
    }
}
