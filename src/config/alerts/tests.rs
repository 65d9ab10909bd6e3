//! Validation of `[[alerts]]` and `[[webhooks]]`.

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
        "alerts[1] (name \"none\"): give exactly one condition of below, above, drop, drop_percent, stale_for, failing_for or control_regressed (found 0)",
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

#[test]
fn control_regressed_is_checked_key_by_key() {
    let problems = problems_of(
        r#"
        [[alerts]]
        name = "device"
        metric = "device"
        control_regressed = {}
        [[alerts]]
        name = "empty"
        metric = "secure"
        control_regressed = { controls = [], categories = [] }
        [[alerts]]
        name = "wrong"
        metric = "secure"
        control_regressed = { controls = ["ok_id", "not an id"], categories = ["identity", "people"] }
        "#,
    );
    let text = problems.join("\n");
    for expected in [
        "alerts[0] (name \"device\").control_regressed: controls are of the secure score; set metric = \"secure\"",
        "alerts[1] (name \"empty\").control_regressed.controls: must not be empty",
        "alerts[1] (name \"empty\").control_regressed.categories: must not be empty",
        "alerts[2] (name \"wrong\").control_regressed.controls[1]: \"not an id\" is not a control id",
        "alerts[2] (name \"wrong\").control_regressed.categories[1]: \"people\" is not a category (one of identity, data, device, apps, infrastructure)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let oversized: Vec<String> = (0..=MAX_WATCHED).map(|i| format!("\"c{i}\"")).collect();
    let toml = format!(
        "[[alerts]]\nname = \"many\"\nmetric = \"secure\"\ncontrol_regressed = {{ controls = [{}] }}\n",
        oversized.join(", ")
    );
    let text = problems_of(&toml).join("\n");
    assert!(
        text.contains(
            "alerts[0] (name \"many\").control_regressed.controls: at most 500 entries, not 501"
        ),
        "{text}"
    );
}

#[test]
fn control_regressed_resolves_to_its_lists() {
    let (config, problems) = resolve(
        r#"
        [[alerts]]
        name = "mfa"
        metric = "secure"
        control_regressed = { categories = ["identity"] }
        [[alerts]]
        name = "all"
        metric = "secure"
        control_regressed = {}
        "#,
        &|_| None,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        config.rules[0].condition,
        Condition::ControlRegressed {
            controls: BTreeSet::new(),
            categories: [Category::Identity].into(),
        }
    );
    assert_eq!(
        config.rules[1].condition,
        Condition::ControlRegressed {
            controls: BTreeSet::new(),
            categories: BTreeSet::new(),
        }
    );
}
