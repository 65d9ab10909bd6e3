//! Which endpoints an event goes to, and which addresses a delivery may reach: a resolve goes
//! only to the endpoints that were sent the firing; a webhook goes to public addresses only
//! unless its entry allows private ones (checked by `check-config` on the URL, and at delivery
//! on what its host resolves to).

use crate::alerts::{
    engine, events, history, low_below_300, rule, sqlite_url, webhook, Receiver, TestClock, SECRET,
};
use scoregate::alerts::{AlertsConfig, Condition, DeliveryStatus};
use scoregate::history::Metric;
use scoregate::metrics::AlertMetrics;
use std::process::Command;

/// The event types `receiver` got, with their alert.
fn received(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.body["type"].as_str().unwrap(),
                r.body["data"]["alert"]
            )
        })
        .collect()
}

#[tokio::test]
async fn a_resolve_goes_only_to_the_endpoints_that_were_sent_the_firing() {
    let dir = tempfile::tempdir().unwrap();
    let (first, added) = (Receiver::start(vec![204]), Receiver::start(vec![204]));
    let clock = TestClock::new();
    let alerts = engine(
        AlertsConfig {
            rules: vec![
                rule("low", &["a"], Condition::Below(300.0)),
                rule("gone", &["a"], Condition::Above(100.0)),
            ],
            webhooks: vec![webhook("first", &first.url)],
        },
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 2);

    // One reload adds an endpoint that takes every alert and removes rule `gone`: its resolve
    // goes to `first` only.
    alerts.reload(AlertsConfig {
        rules: vec![rule("low", &["a"], Condition::Below(300.0))],
        webhooks: vec![webhook("first", &first.url), webhook("added", &added.url)],
    });
    alerts.flush().await;
    // Then `low` recovers: its resolve too goes to `first` only.
    clock.advance(std::time::Duration::from_secs(60));
    alerts.on_reading("a", Metric::Device, 350.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 2);
    let mut first_got = received(&first);
    first_got.sort();
    assert_eq!(
        first_got,
        [
            "alert.firing \"gone\"",
            "alert.firing \"low\"",
            "alert.resolved \"gone\"",
            "alert.resolved \"low\""
        ]
    );
    assert!(added.received().is_empty(), "{:?}", received(&added));
    let outbox = alerts.deliveries(None, None, 100).await.unwrap();
    assert!(
        outbox.iter().all(|delivery| delivery.webhook == "first"),
        "{outbox:?}"
    );

    // The added endpoint takes what fires from now on, and its resolve.
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    clock.advance(std::time::Duration::from_secs(60));
    alerts.on_reading("a", Metric::Device, 350.0, clock.now());
    alerts.flush().await;
    alerts.deliver_due().await.unwrap();
    assert_eq!(
        received(&added),
        ["alert.firing \"low\"", "alert.resolved \"low\""]
    );
    assert_eq!(events(&alerts).await.len(), 6);
}

/// The one delivery of rule `low`'s firing to `url` (with `allow_private_addresses` set to
/// `allow`), after one attempt.
async fn one_attempt(url: &str, allow: bool) -> scoregate::alerts::Delivery {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let mut config = low_below_300(url);
    config.webhooks[0].allow_private_addresses = allow;
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let mut outbox = alerts.deliveries(None, None, 10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    outbox.remove(0)
}

#[tokio::test]
async fn a_host_resolving_to_a_loopback_address_over_https_is_refused_at_delivery_and_not_retried()
{
    let receiver = Receiver::start(vec![204]);
    let port = receiver
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    // `localhost` is a name: the URL check cannot tell, the resolver can.
    let delivery = one_attempt(&format!("https://localhost:{port}/hook"), false).await;
    assert_eq!(delivery.status, DeliveryStatus::Failed, "{delivery:?}");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status, None);
    let error = delivery.last_error.unwrap();
    assert!(
        error.starts_with("not sent: ")
            && error.contains("is a loopback address: webhooks go to public addresses only")
            && error.contains("allow_private_addresses = true")
            && error.ends_with("not retried"),
        "{error}"
    );
    assert!(receiver.received().is_empty());

    // A literal is refused without resolving.
    let delivery = one_attempt("https://169.254.169.254/latest/meta-data", false).await;
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert!(delivery
        .last_error
        .unwrap()
        .contains("169.254.169.254 is a cloud metadata address"),);

    // Allowed, the same endpoint is attempted (the plain-http receiver cannot speak TLS: the
    // attempt fails on the handshake and is retried, it is not refused).
    let delivery = one_attempt(&format!("https://localhost:{port}/hook"), true).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending, "{delivery:?}");
    assert!(
        !delivery.last_error.unwrap_or_default().contains("not sent"),
        "refused though allowed"
    );

    // Plain http to a loopback name is delivered, as before.
    let delivery = one_attempt(&format!("http://localhost:{port}/hook"), false).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered, "{delivery:?}");
    assert_eq!(receiver.received().len(), 1);
    assert!(receiver.received()[0].valid);
}

#[test]
fn check_config_refuses_webhooks_to_private_link_local_and_metadata_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = |allow: bool| {
        [
            "https://169.254.169.254/",
            "https://10.0.0.1/",
            "https://[fe80::1]/",
        ]
        .iter()
        .enumerate()
        .map(|(index, url)| {
            format!(
                "[[webhooks]]\nname = \"hook{index}\"\nurl = \"{url}\"\n\
                     secret = {{ env = \"PSA_SECRET\" }}\nallow_private_addresses = {allow}\n"
            )
        })
        .collect::<String>()
    };
    let check = |allow: bool| {
        let path = dir.path().join(format!("{allow}.toml"));
        std::fs::write(
            &path,
            format!(
                "[auth]\nenabled = false\n\n[[tenants]]\nid = \"contoso\"\ntenant_id = \"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\"\n\
                 client_id = \"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1\"\n\
                 client_secret = {{ env = \"PSA_SECRET\" }}\n\n{}",
                hooks(allow)
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_scoregate"))
            .arg("check-config")
            .arg(&path)
            .env("PSA_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let refused = check(false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for expected in [
        "webhooks[0] (name \"hook0\").url: 169.254.169.254 is a cloud metadata address",
        "webhooks[1] (name \"hook1\").url: 10.0.0.1 is a private address",
        "webhooks[2] (name \"hook2\").url: fe80::1 is a link-local address",
    ] {
        assert!(stderr.contains(expected), "{expected} not in {stderr}");
    }
    let allowed = check(true);
    assert!(
        allowed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&allowed.stdout),
        String::from_utf8_lossy(&allowed.stderr)
    );
}
