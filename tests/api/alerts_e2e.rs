//! Alerts end to end: a running gateway fetches from the emulator, its fetch path feeds the
//! rules, and its own delivery workers POST signed events to a receiver that verifies them
//! independently of the signer ([`LoggingReceiver`] keeps only events with a valid
//! signature). Scores are moved at run time with the emulator's operator endpoint
//! `POST /_emulator/tenants/{slug}/score`.
//!
//! The process level (restarts, the demo) is tested in `alerts_e2e_process`.

use crate::helpers::{emulator_options, fault, spawn_app_with_config, TestApp};
use scoregate::alerts::{Alerts, LoggingReceiver, Options, ReceivedEvent, WebhookSecret};
use scoregate::emulator::FaultProfile;
use scoregate::metrics::AlertMetrics;
use secrecy::ExposeSecret;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The longest any "must happen" poll waits: generous, since the machine is shared; a passing
/// run waits only as long as the thing takes (a delivery: well under a second, or the first
/// retry's back-off of at most 5 s).
pub(crate) const BOUND: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it returns `Some`, failing with `what` after [`BOUND`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < BOUND, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The events `receiver` accepted so far once there are at least `count`.
pub(crate) async fn received(receiver: &LoggingReceiver, count: usize) -> Vec<ReceivedEvent> {
    eventually(&format!("{count} webhook(s)"), || async move {
        let events = receiver.events();
        (events.len() >= count).then_some(events)
    })
    .await
}

/// A client that trusts the emulator's CA, for its operator endpoints.
fn emulator_client(app: &TestApp) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(app.emulator.ca_cert_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

/// `POST /_emulator/tenants/{slug}/score` with `body`: status and JSON answer.
async fn set_score(app: &TestApp, slug: &str, body: &str) -> (u16, serde_json::Value) {
    let response = emulator_client(app)
        .post(format!(
            "{}/_emulator/tenants/{slug}/score",
            app.emulator.base_url()
        ))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// GET `path` on the gateway with `key`: status and JSON body.
async fn get(app: &TestApp, path: &str, key: &str) -> (u16, serde_json::Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The tenants of `/alerts` for `key`.
async fn firing_tenants(app: &TestApp, key: &str) -> BTreeSet<String> {
    let (status, body) = get(app, "/alerts", key).await;
    assert_eq!(status, 200, "{body}");
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["tenant"].as_str().unwrap().to_owned())
        .collect()
}

/// `(type, tenant)` of every event in `/alerts/events` for `key`.
async fn event_list(app: &TestApp, key: &str) -> Vec<(String, String)> {
    let (status, body) = get(app, "/alerts/events?limit=1000", key).await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event["tenant"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn rfc3339(value: &serde_json::Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        value.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn the_emulator_serves_an_operator_set_device_score_until_it_is_cleared() {
    let app = crate::helpers::spawn_app(emulator_options(2, vec![])).await;
    let drifting = crate::helpers::direct_score(&app, "contoso").await;
    let (status, body) = set_score(&app, "contoso", r#"{"score": 123.5}"#).await;
    assert_eq!((status, &body["score"]), (200, &serde_json::json!(123.5)));
    assert_eq!(crate::helpers::direct_score(&app, "contoso").await, 123.5);
    // Only that tenant, and only its device score.
    assert_ne!(crate::helpers::direct_score(&app, "fabrikam").await, 123.5);
    let listed: serde_json::Value = emulator_client(&app)
        .get(format!("{}/_emulator/tenants", app.emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["score_override"], 123.5);
    assert!(listed[1]["score_override"].is_null());
    for bad in [
        r#"{"score": -1}"#,
        r#"{"score": "high"}"#,
        r#"{"points": 1}"#,
        "{",
    ] {
        let (status, body) = set_score(&app, "contoso", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(set_score(&app, "nobody", r#"{"score": 1}"#).await.0, 404);
    assert_eq!(crate::helpers::direct_score(&app, "contoso").await, 123.5);
    assert_eq!(
        set_score(&app, "contoso", r#"{"score": null}"#).await.0,
        200
    );
    assert_eq!(
        crate::helpers::direct_score(&app, "contoso").await,
        drifting
    );
    // The same through the library.
    app.emulator.set_score("contoso", Some(42.0)).unwrap();
    assert_eq!(crate::helpers::direct_score(&app, "contoso").await, 42.0);
    assert!(app.emulator.set_score("contoso", Some(f64::NAN)).is_err());
    assert!(app.emulator.set_score("nobody", None).is_err());
}

#[tokio::test]
async fn a_below_rule_fires_once_per_tenant_in_scope_never_repeats_and_resolves_when_the_score_recovers(
) {
    let (secret_text, secret) = WebhookSecret::generate();
    let receiver = LoggingReceiver::start(secret).unwrap();
    let (contoso_key, contoso_digest) = scoregate::auth::generate_key().unwrap();
    let (silver_key, silver_digest) = scoregate::auth::generate_key().unwrap();
    let (operator, operator_digest) = scoregate::auth::generate_key().unwrap();
    let extra = format!(
        "[[api_keys]]\nname = \"contoso\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"silver\"\nsha256 = \"{silver_digest}\"\ntags = [\"silver\"]\n\n\
         [[api_keys]]\nname = \"operator\"\nsha256 = \"{operator_digest}\"\ntenants = [\"*\"]\noperator = true\n\n\
         [[alerts]]\nname = \"gold-low\"\nmetric = \"device\"\ntags = [\"gold\"]\nbelow = 300\n\n\
         [[webhooks]]\nname = \"psa\"\nurl = \"{}\"\nsecret = {{ env = \"PSA_SECRET\" }}\n",
        receiver.url()
    );
    let app = spawn_app_with_config(
        emulator_options(5, vec![]),
        &[
            ("SCOREGATE__AUTH__ENABLED", "true"),
            ("PSA_SECRET", secret_text.expose_secret()),
        ],
        &extra,
    )
    .await;
    let tenants = app.emulator.tenants();
    let gold: BTreeSet<String> = tenants
        .iter()
        .filter(|t| t.tags.iter().any(|tag| tag == "gold"))
        .map(|t| t.slug.clone())
        .collect();
    assert!(gold.len() == 2 && gold.contains("contoso"), "{gold:?}");
    // Every tenant under the line: only those in scope may fire.
    for tenant in &tenants {
        app.emulator.set_score(&tenant.slug, Some(250.0)).unwrap();
    }
    let slugs: Vec<String> = tenants.iter().map(|t| t.slug.clone()).collect();
    fetch_all(&app, &slugs, &operator).await;
    let events = received(&receiver, gold.len()).await;
    let alerts = app.services.alerts().unwrap();
    alerts.flush().await;
    let notified: BTreeSet<String> = events
        .iter()
        .map(|e| e.body["data"]["tenant"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(notified, gold);
    for event in &events {
        let body = &event.body;
        assert_eq!(body["type"], "alert.firing");
        let data = body["data"].as_object().unwrap();
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["alert", "metric", "since", "tenant", "threshold", "value"]
        );
        assert_eq!(data["alert"], "gold-low");
        assert_eq!(data["metric"], "device");
        assert_eq!(data["value"], 250.0);
        assert_eq!(data["threshold"], 300.0);
        let (at, since) = (rfc3339(&body["timestamp"]), rfc3339(&data["since"]));
        assert!(since <= at && OffsetDateTime::now_utc() - at < time::Duration::minutes(1));
        assert!(event.id.starts_with("msg_"), "{}", event.id);
        assert!((OffsetDateTime::now_utc().unix_timestamp() - event.timestamp).abs() < 60);
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), gold.len(), "one webhook-id per event");

    // More fetches while firing: read, evaluated, and nothing new.
    fetch_all(&app, &slugs, &operator).await;
    fetch_all(&app, &slugs, &operator).await;
    alerts.flush().await;
    let stats = app.emulator.stats();
    for tenant in &tenants {
        assert_eq!(stats.tenant(&tenant.slug).score_calls, 3, "{}", tenant.slug);
    }
    let all = event_list(&app, &operator).await;
    assert_eq!(all.len(), gold.len(), "no repeat while firing: {all:?}");
    let (_, pending) = get(&app, "/webhooks/deliveries?status=pending", &operator).await;
    assert_eq!(pending["deliveries"], serde_json::json!([]));
    let (_, delivered) = get(&app, "/webhooks/deliveries?status=delivered", &operator).await;
    let delivered_ids: BTreeSet<&str> = delivered["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(delivered_ids, ids);
    assert_eq!(receiver.events().len(), gold.len());

    // `/alerts` and `/alerts/events` show each key its own tenants.
    assert_eq!(firing_tenants(&app, &operator).await, gold);
    assert_eq!(
        firing_tenants(&app, &contoso_key).await,
        BTreeSet::from(["contoso".to_owned()])
    );
    assert!(firing_tenants(&app, &silver_key).await.is_empty());
    assert_eq!(
        event_list(&app, &contoso_key).await,
        [("alert.firing".to_owned(), "contoso".to_owned())]
    );
    assert!(event_list(&app, &silver_key).await.is_empty());

    // contoso recovers: one `alert.resolved`, for contoso only.
    let (status, _) = set_score(&app, "contoso", r#"{"score": 400}"#).await;
    assert_eq!(status, 200);
    fetch_all(&app, &slugs, &operator).await;
    let events = received(&receiver, gold.len() + 1).await;
    let resolved = &events[gold.len()];
    assert_eq!(resolved.body["type"], "alert.resolved");
    assert_eq!(resolved.body["data"]["tenant"], "contoso");
    assert_eq!(resolved.body["data"]["value"], 400.0);
    assert_eq!(resolved.body["data"]["threshold"], 300.0);
    assert!(!ids.contains(resolved.id.as_str()));
    fetch_all(&app, &slugs, &operator).await;
    alerts.flush().await;
    assert_eq!(event_list(&app, &operator).await.len(), gold.len() + 1);
    assert!(firing_tenants(&app, &contoso_key).await.is_empty());
    assert_eq!(
        firing_tenants(&app, &operator).await,
        &gold - &BTreeSet::from(["contoso".to_owned()])
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(&format!(
        "scoregate_alert_events_total{{alert=\"gold-low\",type=\"alert.firing\"}} {}",
        gold.len()
    )));
    assert!(metrics
        .contains("scoregate_alert_events_total{alert=\"gold-low\",type=\"alert.resolved\"} 1"));
    assert!(!metrics.contains(secret_text.expose_secret()));
    assert!(!crate::helpers::captured_logs().contains(secret_text.expose_secret()));
}

/// Forces a fetch of every tenant in `slugs` (each must answer 200).
async fn fetch_all(app: &TestApp, slugs: &[String], key: &str) {
    for slug in slugs {
        let path = format!("/tenants/{slug}/score?max_age=0");
        let (status, body) = get(app, &path, key).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// A clock the test moves, for an engine over the gateway's own database.
#[derive(Clone)]
struct MovedClock(Arc<Mutex<OffsetDateTime>>);

impl MovedClock {
    fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap() = at;
    }
}

#[tokio::test]
async fn a_failing_for_rule_fires_once_the_window_has_passed_for_a_revoked_secret() {
    let (secret_text, secret) = WebhookSecret::generate();
    let receiver = LoggingReceiver::start(secret).unwrap();
    let extra = format!(
        "[[alerts]]\nname = \"broken\"\nmetric = \"device\"\ntenants = [\"fabrikam\"]\nfailing_for = \"1h\"\n\n\
         [[webhooks]]\nname = \"psa\"\nurl = \"{}\"\nsecret = {{ env = \"PSA_SECRET\" }}\n",
        receiver.url()
    );
    let app = spawn_app_with_config(
        emulator_options(2, vec![fault(FaultProfile::Revoked, &["fabrikam"])]),
        &[("PSA_SECRET", secret_text.expose_secret())],
        &extra,
    )
    .await;
    let started = OffsetDateTime::now_utc();
    let (status, _, body) = app.get_json("/tenants/fabrikam/score?max_age=0").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "upstream_auth");
    let stats = app.emulator.stats().tenant("fabrikam");
    assert!(stats.token_errors >= 1, "{stats:?}");
    assert_eq!(stats.score_calls, 0, "no token, no score call");
    let alerts = app.services.alerts().unwrap();
    alerts.flush().await;

    // The gateway's engine runs on the wall clock; the window is an hour, so that it never
    // fires within the test however slow the machine (a minute's window let it fire as well
    // on a loaded CI machine: two events). An engine with a clock the test moves, over the gateway's own database (as a second replica
    // would be), evaluates the failures the gateway's fetch path recorded. Its outbox row is
    // due at its own (moved) now, so it delivers it itself; the gateway's workers deliver on
    // the wall clock in the other tests.
    let clock = MovedClock(Arc::new(Mutex::new(started)));
    let now = clock.clone();
    let moved = Alerts::start_with(
        (*alerts.config()).clone(),
        app.services.history().unwrap().clone(),
        scoregate::alerts::WebhookClients::build(|| Ok(reqwest::Client::builder())).unwrap(),
        AlertMetrics::default(),
        &tokio::runtime::Handle::current(),
        Options {
            clock: Arc::new(move || *now.0.lock().unwrap()),
            tick_period: None,
            poll_period: None,
        },
    );
    clock.set(started + Duration::from_secs(45 * 60));
    moved.tick().await;
    assert!(
        event_list(&app, "").await.is_empty(),
        "45 min is inside 1 h"
    );
    clock.set(started + Duration::from_secs(75 * 60));
    moved.tick().await;
    assert_eq!(
        event_list(&app, "").await,
        [("alert.firing".to_owned(), "fabrikam".to_owned())]
    );
    moved.tick().await;
    assert_eq!(moved.deliver_due().await.unwrap(), 1);
    let events = received(&receiver, 1).await;
    let data = &events[0].body["data"];
    assert_eq!(events[0].body["type"], "alert.firing");
    assert_eq!(data["alert"], "broken");
    assert_eq!(data["tenant"], "fabrikam");
    assert_eq!(data["threshold"], 3600.0);
    let value = data["value"].as_f64().unwrap();
    assert!((3600.0..=4800.0).contains(&value), "{value}");
    assert!(rfc3339(&data["since"]) >= started);
    assert_eq!(event_list(&app, "").await.len(), 1, "firing once");
    let (_, _, firing) = app.get_json("/alerts").await;
    assert_eq!(firing["alerts"][0]["tenant"], "fabrikam");
    assert_eq!(firing["alerts"].as_array().unwrap().len(), 1);
}

// --- Process level ----------------------------------------------------------------------------
