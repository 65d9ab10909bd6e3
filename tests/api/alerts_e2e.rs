//! Alerts end to end: a running gateway fetches from the emulator, its fetch path feeds the
//! rules, and its own delivery workers POST signed events to a receiver that verifies them
//! independently of the signer ([`LoggingReceiver`] keeps only events with a valid
//! signature). Scores are moved at run time with the emulator's operator endpoint
//! `POST /_emulator/tenants/{slug}/score`.
//!
//! Also the process level: a real `scoregate serve` stopped with SIGTERM or `kill -9` while a
//! delivery is pending delivers it after a restart, with the same `webhook-id`, and writes no
//! second event.

use crate::helpers::{emulator_options, fault, spawn_app_with_config, TestApp};
use scoregate::alerts::{Alerts, LoggingReceiver, Options, ReceivedEvent, WebhookSecret};
use scoregate::emulator::FaultProfile;
use scoregate::metrics::AlertMetrics;
use secrecy::ExposeSecret;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The longest any "must happen" poll waits: generous, since the machine is shared; a passing
/// run waits only as long as the thing takes (a delivery: well under a second, or the first
/// retry's back-off of at most 5 s).
const BOUND: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it returns `Some`, failing with `what` after [`BOUND`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
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
async fn received(receiver: &LoggingReceiver, count: usize) -> Vec<ReceivedEvent> {
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
        "[[alerts]]\nname = \"broken\"\nmetric = \"device\"\ntenants = [\"fabrikam\"]\nfailing_for = \"1m\"\n\n\
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

    // The gateway's engine runs on the wall clock, and the shortest window is a minute. An
    // engine with a clock the test moves, over the gateway's own database (as a second replica
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
    clock.set(started + Duration::from_secs(45));
    moved.tick().await;
    assert!(
        event_list(&app, "").await.is_empty(),
        "45 s is inside 1 min"
    );
    clock.set(started + Duration::from_secs(75));
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
    assert_eq!(data["threshold"], 60.0);
    let value = data["value"].as_f64().unwrap();
    assert!((60.0..=80.0).contains(&value), "{value}");
    assert!(rfc3339(&data["since"]) >= started);
    assert_eq!(event_list(&app, "").await.len(), 1, "firing once");
    let (_, _, firing) = app.get_json("/alerts").await;
    assert_eq!(firing["alerts"][0]["tenant"], "fabrikam");
    assert_eq!(firing["alerts"].as_array().unwrap().len(), 1);
}

// --- Process level ----------------------------------------------------------------------------

/// A receiver whose answer the test switches (503 until told otherwise), recording every
/// request's `webhook-id`, whether its signature verifies, and its body.
struct SwitchedReceiver {
    url: String,
    status: Arc<AtomicU16>,
    requests: Arc<Mutex<Vec<(String, bool, serde_json::Value)>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for SwitchedReceiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl SwitchedReceiver {
    fn start(secret: String) -> Self {
        use actix_web::{web, HttpRequest, HttpResponse};
        let status = Arc::new(AtomicU16::new(503));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = (status.clone(), requests.clone(), secret);
        let (base, handle) = crate::helpers::serve_loopback(move || {
            let state = state.clone();
            web::to(move |request: HttpRequest, body: web::Bytes| {
                let (status, requests, secret) = state.clone();
                async move {
                    let (id, valid) = crate::alerts::signed_by(&secret, &request, &body);
                    let parsed = serde_json::from_slice(&body).unwrap_or_default();
                    requests.lock().unwrap().push((id, valid, parsed));
                    let code = status.load(Ordering::SeqCst);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                        .finish()
                }
            })
        });
        let url = format!("{base}/hook");
        Self {
            url,
            status,
            requests,
            handle,
        }
    }

    fn requests(&self) -> Vec<(String, bool, serde_json::Value)> {
        self.requests.lock().unwrap().clone()
    }
}

/// Starts `scoregate serve --config config` with `database` as its history and the webhook
/// secret in `PSA_SECRET`; returns once it listens.
async fn serve(
    config: &std::path::Path,
    database: &str,
    secret: &str,
) -> crate::helpers::ServedProcess {
    crate::helpers::serve_process(config, database, &[("PSA_SECRET", secret)]).await
}

/// GET `path` on a served gateway (authentication off): the JSON body.
async fn served_json(gateway: &crate::helpers::ServedProcess, path: &str) -> serde_json::Value {
    let response = reqwest::get(format!("{}{path}", gateway.address))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().await.unwrap()
}

/// How the first gateway is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Kill9,
}

/// One event pending at a receiver answering 503; the gateway stopped with `stop`; restarted
/// with the receiver answering 204: the delivery arrives with the same `webhook-id`, and the
/// restarted gateway, fetching the still-low tenant again, writes no second event.
async fn a_pending_delivery_survives(stop: Stop) {
    let emulator = crate::helpers::start_emulator(emulator_options(2, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = emulator.write_config(dir.path()).unwrap();
    let (secret_text, _) = WebhookSecret::generate();
    let secret = secret_text.expose_secret().to_owned();
    let receiver = SwitchedReceiver::start(secret.clone());
    // `sentinel` (fabrikam, not sent) tells when the engine has evaluated what came before.
    let rules = format!(
        "\n[[alerts]]\nname = \"low\"\nmetric = \"device\"\ntenants = [\"contoso\"]\nbelow = 100000\n\n\
         [[alerts]]\nname = \"sentinel\"\nmetric = \"device\"\ntenants = [\"fabrikam\"]\nbelow = 100000\n\n\
         [[webhooks]]\nname = \"psa\"\nurl = \"{}\"\nsecret = {{ env = \"PSA_SECRET\" }}\nalerts = [\"low\"]\ntimeout_ms = 2000\n",
        receiver.url
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&rules);
    std::fs::write(&config, text).unwrap();
    let database = format!("sqlite://{}/alerts.db", dir.path().display());

    let mut gateway = serve(&config, &database, &secret).await;
    let score = served_json(&gateway, "/tenants/contoso/score?max_age=0").await;
    assert!(score["score"].as_f64().unwrap() < 100_000.0);
    // The first attempt answered 503 and is recorded: pending, attempted once.
    let served = &gateway;
    let pending = eventually("the first attempt recorded", || async move {
        let body = served_json(served, "/webhooks/deliveries?status=pending").await;
        let row = body["deliveries"].get(0)?.clone();
        (row["attempts"] == 1).then_some(row)
    })
    .await;
    assert_eq!(pending["last_status"], 503);
    let events = served_json(&gateway, "/alerts/events").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    let first = receiver.requests();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, pending["webhook_id"]);
    assert!(first[0].1, "signed");

    match stop {
        Stop::Sigterm => {
            let pid = gateway.child.id().unwrap().to_string();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = tokio::time::timeout(BOUND, gateway.child.wait())
                .await
                .expect("stops after SIGTERM")
                .unwrap();
            assert_eq!(exit.code(), Some(0), "{exit:?}");
        }
        Stop::Kill9 => {
            gateway.child.start_kill().unwrap();
            let exit = gateway.child.wait().await.unwrap();
            assert_eq!(exit.code(), None, "killed by a signal");
        }
    }
    receiver.status.store(204, Ordering::SeqCst);
    let restarted = serve(&config, &database, &secret).await;
    // Still low after the restart, then the sentinel: once the sentinel's event exists, the
    // contoso reading before it has been evaluated.
    served_json(&restarted, "/tenants/contoso/score?max_age=0").await;
    served_json(&restarted, "/tenants/fabrikam/score?max_age=0").await;
    let served = &restarted;
    let events = eventually("the sentinel's event", || async move {
        let body = served_json(served, "/alerts/events").await;
        let events = body["events"].as_array()?.clone();
        events
            .iter()
            .any(|event| event["alert"] == "sentinel")
            .then_some(events)
    })
    .await;
    let low: Vec<&serde_json::Value> = events.iter().filter(|e| e["alert"] == "low").collect();
    assert_eq!(
        low.len(),
        1,
        "no second event after the restart: {events:?}"
    );
    assert_eq!(low[0]["id"], pending["event_id"]);
    // Delivered after the back-off (at most 5 s), with the same `webhook-id`.
    let delivered = eventually("the delivery after the restart", || async move {
        let body = served_json(served, "/webhooks/deliveries?status=delivered").await;
        body["deliveries"].get(0).cloned()
    })
    .await;
    assert_eq!(delivered["webhook_id"], pending["webhook_id"]);
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(delivered["last_status"], 204);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].0, requests[0].0, "the same webhook-id");
    assert!(requests[1].1, "signed");
    assert_eq!(requests[1].2, requests[0].2, "the same event");
    assert_eq!(requests[1].2["type"], "alert.firing");
    assert_eq!(requests[1].2["data"]["tenant"], "contoso");
    let all = served_json(&restarted, "/webhooks/deliveries").await;
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 1, "{all}");
    // Both runs fetched contoso once each.
    assert_eq!(emulator.stats().tenant("contoso").score_calls, 2);
}

#[tokio::test]
async fn a_delivery_pending_at_sigterm_is_delivered_after_the_restart_with_the_same_webhook_id() {
    a_pending_delivery_survives(Stop::Sigterm).await;
}

#[tokio::test]
async fn a_delivery_pending_at_kill_9_is_delivered_after_the_restart_with_the_same_webhook_id() {
    a_pending_delivery_survives(Stop::Kill9).await;
}

#[tokio::test]
async fn the_demo_shows_an_alert_arriving_at_its_receiver_within_seconds() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["demo", "--bind", "127.0.0.1:0", "--history"])
        .arg(dir.path().join("demo.db"))
        .env("RUST_LOG", "info")
        .env_remove("SCOREGATE__REFRESH__STARTUP_SPREAD_SECONDS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("scoregate demo starts");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let banner = async {
        let mut text = String::new();
        while let Ok(Some(line)) = stdout.next_line().await {
            text.push_str(&line);
            text.push('\n');
            if line.contains("/webhooks/deliveries") {
                return text;
            }
        }
        panic!("the demo's banner ended early: {text}");
    };
    let banner = tokio::time::timeout(BOUND, banner)
        .await
        .expect("the demo prints its banner");
    assert!(banner.contains("device-below-300"), "{banner}");
    let alerts_line = banner
        .lines()
        .find(|line| line.trim_start().starts_with("curl -s http://") && line.ends_with("/alerts"))
        .unwrap_or_else(|| panic!("{banner}"));
    // The first round of refreshes fetches every tenant within seconds; the rule fires for
    // those below 300 and the receiver logs the (verified) webhook.
    let received = async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("receiver: webhook received") {
                return line;
            }
        }
        panic!("the demo's log ended before a webhook arrived");
    };
    let line = tokio::time::timeout(BOUND, received)
        .await
        .expect("a webhook arrives within seconds");
    assert!(
        line.contains("alert.firing") && line.contains("device-below-300"),
        "{line}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let url = alerts_line.trim().trim_start_matches("curl -s ").to_owned();
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert!(!body["alerts"].as_array().unwrap().is_empty(), "{body}");
    assert!(body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|alert| alert["alert"] == "device-below-300"
            && alert["value"].as_f64().unwrap() < 300.0));
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
