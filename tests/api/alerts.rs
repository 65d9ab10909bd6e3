//! Alerts: rules evaluated through the engine's interface (`on_reading`, `on_failure`, `tick`)
//! with a clock the tests move, events delivered to a receiver that verifies Standard Webhooks
//! signatures (written here from the specification, not with the gateway's signer), the outbox
//! across restarts and replicas (SQLite and a real PostgreSQL), and the API routes.

use crate::helpers::{emulator_options, spawn_app_with_config};
use crate::postgres;
use actix_web::{web, HttpRequest, HttpResponse};
use scoregate::alerts::{Alerts, AlertsConfig, Condition, Options, Rule, Webhook, WebhookSecret};
use scoregate::config::HistoryConfig;
use scoregate::history::{History, Metric};
use scoregate::metrics::{AlertMetrics, HistoryMetrics};
use scoregate::model::TenantId;
use secrecy::SecretString;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// The Standard Webhooks specification's example secret.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) valid: bool,
    pub(crate) body: serde_json::Value,
}

/// A webhook receiver on loopback: answers each request with the next scripted status (the
/// last one repeats), and records whether the signature verifies.
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Verification from the specification: base64 HMAC-SHA256 with the base64-decoded part of
/// the secret after `whsec_`, over `id.timestamp.body`, in any of the space-separated
/// `v1,<signature>` entries.
fn verifies(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    use aws_lc_rs::hmac;
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    let expected = base64::engine::general_purpose::STANDARD
        .encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &content).as_ref());
    header
        .split(' ')
        .any(|entry| entry == format!("v1,{expected}"))
}

/// The delivery's `webhook-id` and whether its signature verifies with `secret`.
pub(crate) fn signed_by(secret: &str, request: &HttpRequest, body: &[u8]) -> (String, bool) {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let valid = verifies(
        secret,
        &id,
        &header("webhook-timestamp"),
        body,
        &header("webhook-signature"),
    );
    (id, valid)
}

impl Receiver {
    pub(crate) fn start(script: Vec<u16>) -> Self {
        let received = Arc::new(Mutex::new(Vec::<Received>::new()));
        let script = Arc::new(Mutex::new(script));
        let state = (received.clone(), script);
        let (base, handle) = crate::helpers::serve_loopback(move || {
            let state = state.clone();
            web::to(move |request: HttpRequest, body: web::Bytes| {
                let (received, script) = state.clone();
                async move {
                    let (id, valid) = signed_by(SECRET, &request, &body);
                    received.lock().unwrap().push(Received {
                        id,
                        valid,
                        body: serde_json::from_slice(&body).unwrap_or_default(),
                    });
                    let status = {
                        let mut script = script.lock().unwrap();
                        if script.len() > 1 {
                            script.remove(0)
                        } else {
                            script.first().copied().unwrap_or(204)
                        }
                    };
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .finish()
                }
            })
        });
        let url = format!("{base}/hook");
        Self {
            url,
            received,
            handle,
        }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A clock the test moves.
#[derive(Clone)]
pub(crate) struct TestClock(Arc<Mutex<OffsetDateTime>>);

impl TestClock {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(
            OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        )))
    }
    pub(crate) fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    fn options(&self) -> Options {
        let clock = self.clone();
        Options {
            clock: Arc::new(move || clock.now()),
            tick_period: None,
            poll_period: None,
        }
    }
}

pub(crate) fn rule(name: &str, tenants: &[&str], condition: Condition) -> Rule {
    Rule {
        name: name.to_owned(),
        metric: Metric::Device,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        condition,
    }
}

pub(crate) fn webhook(name: &str, url: &str) -> Webhook {
    Webhook {
        name: name.to_owned(),
        url: url.parse().unwrap(),
        secret: WebhookSecret::parse(SECRET).unwrap(),
        alerts: None,
        timeout: Duration::from_secs(5),
        allow_private_addresses: false,
    }
}

pub(crate) fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/alerts.db?mode=rwc", dir.path().display())
}

pub(crate) async fn history(url: String) -> Arc<History> {
    let history = Arc::new(History::start(
        &HistoryConfig {
            enabled: true,
            url: SecretString::from(url),
            retention_days: 400,
            alerts_retention_days: 400,
            buffer: 1_000,
        },
        HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
    ));
    tokio::time::timeout(Duration::from_secs(30), async {
        while history.store().is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the database connects");
    history
}

/// Rule `low` (tenant `a`'s device score below 300) delivered to webhook `psa` at `url`: the
/// set-up most delivery tests share.
pub(crate) fn low_below_300(url: &str) -> AlertsConfig {
    AlertsConfig {
        rules: vec![rule("low", &["a"], Condition::Below(300.0))],
        webhooks: vec![webhook("psa", url)],
    }
}

/// The engine over `history`, with the test's clock and the gateway's own webhook client (as
/// `serve` builds it: no redirects followed).
pub(crate) fn engine(
    config: AlertsConfig,
    history: Arc<History>,
    clock: &TestClock,
    metrics: AlertMetrics,
) -> Alerts {
    Alerts::start_with(
        config,
        history,
        scoregate::alerts::WebhookClients::build(|| {
            scoregate::upstream::webhook_client(
                &scoregate::config::UpstreamSettings::default(),
                None,
            )
        })
        .unwrap(),
        metrics,
        &tokio::runtime::Handle::current(),
        clock.options(),
    )
}

pub(crate) async fn events(alerts: &Alerts) -> Vec<(String, String)> {
    alerts
        .events(&scoregate::alerts::EventFilter {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|(_, event)| {
            (
                event.kind.as_str().to_owned(),
                format!("{}/{}", event.alert, event.tenant),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_tenant_in_scope_fires_once_and_never_again_while_firing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![rule("low", &["a", "b"], Condition::Below(300.0))],
        webhooks: vec![webhook("psa", &receiver.url)],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    for tenant in ["a", "b", "c"] {
        alerts.on_reading(tenant, Metric::Device, 250.0, clock.now());
    }
    clock.advance(Duration::from_secs(60));
    alerts.on_reading("a", Metric::Device, 240.0, clock.now());
    alerts.on_reading("b", Metric::Exposure, 10.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r.valid), "{received:?}");
    let mut tenants: Vec<&str> = received
        .iter()
        .map(|r| r.body["data"]["tenant"].as_str().unwrap())
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["a", "b"]);
    let body = &received[0].body;
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["data"]["alert"], "low");
    assert_eq!(body["data"]["metric"], "device");
    assert_eq!(body["data"]["value"], 250.0);
    assert_eq!(body["data"]["threshold"], 300.0);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(received[0].id.starts_with("msg_"));
    // Nothing more to deliver, nothing more fired.
    assert_eq!(alerts.deliver_due().await.unwrap(), 0);
    assert_eq!(events(&alerts).await.len(), 2);
    let firing = alerts.firing(None).await.unwrap();
    assert_eq!(firing.len(), 2);
    assert_eq!(firing[0].value, Some(250.0));
}

#[tokio::test]
async fn a_recovered_value_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![200]);
    let clock = TestClock::new();
    let config = low_below_300(&receiver.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    for value in [250.0, 350.0, 360.0] {
        alerts.on_reading("a", Metric::Device, value, clock.now());
        clock.advance(Duration::from_secs(60));
    }
    alerts.flush().await;
    assert_eq!(
        events(&alerts).await,
        [
            ("alert.firing".to_owned(), "low/a".to_owned()),
            ("alert.resolved".to_owned(), "low/a".to_owned())
        ]
    );
    alerts.deliver_due().await.unwrap();
    let types: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.body["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["alert.firing", "alert.resolved"]);
    assert_eq!(receiver.received()[1].body["data"]["value"], 350.0);
    assert!(alerts.firing(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn stale_for_and_failing_for_follow_a_clock_that_moves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![
            rule(
                "stale",
                &["a"],
                Condition::StaleFor(Duration::from_secs(7_200)),
            ),
            rule(
                "failing",
                &["a"],
                Condition::FailingFor(Duration::from_secs(3_600)),
            ),
        ],
        webhooks: vec![],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 300.0, clock.now());
    clock.advance(Duration::from_secs(600));
    alerts.on_failure("a", Metric::Device, clock.now());
    clock.advance(Duration::from_secs(3_000));
    alerts.on_failure("a", Metric::Device, clock.now());
    alerts.tick().await;
    assert!(events(&alerts).await.is_empty(), "50 minutes failing");
    clock.advance(Duration::from_secs(600));
    alerts.tick().await;
    assert_eq!(
        events(&alerts).await,
        [("alert.firing".to_owned(), "failing/a".to_owned())]
    );
    clock.advance(Duration::from_secs(3_600));
    alerts.tick().await;
    alerts.tick().await;
    assert_eq!(
        events(&alerts).await,
        [
            ("alert.firing".to_owned(), "failing/a".to_owned()),
            ("alert.firing".to_owned(), "stale/a".to_owned())
        ]
    );
    let firing = alerts.firing(None).await.unwrap();
    let stale = firing.iter().find(|f| f.alert == "stale").unwrap();
    assert_eq!(stale.threshold, Some(7_200.0));
    assert!(stale.value.unwrap() >= 7_200.0);
    // One success resolves both.
    clock.advance(Duration::from_secs(60));
    alerts.on_reading("a", Metric::Device, 300.0, clock.now());
    alerts.tick().await;
    let all = events(&alerts).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all[2..].iter().all(|(kind, _)| kind == "alert.resolved"));
}

#[tokio::test]
async fn drops_compare_with_the_history_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let history = history(sqlite_url(&dir)).await;
    let config = AlertsConfig {
        rules: vec![
            rule(
                "drop",
                &["a"],
                Condition::Drop {
                    points: 20.0,
                    within: Duration::from_secs(7 * 86_400),
                },
            ),
            rule(
                "drop-percent",
                &["a"],
                Condition::DropPercent {
                    percent: 10.0,
                    within: Duration::from_secs(7 * 86_400),
                },
            ),
        ],
        webhooks: vec![],
    };
    let week_ago = clock.now() - Duration::from_secs(8 * 86_400);
    history.record(scoregate::history::Reading::of_score(
        TenantId::parse("a").unwrap(),
        Metric::Device,
        300.0,
        week_ago,
    ));
    history.flush().await;
    let alerts = engine(config, history, &clock, AlertMetrics::default());
    alerts.on_reading("a", Metric::Device, 285.0, clock.now());
    alerts.flush().await;
    assert!(events(&alerts).await.is_empty(), "15 points, 5 %");
    alerts.on_reading("a", Metric::Device, 260.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 2);
    let firing = alerts.firing(None).await.unwrap();
    let drop = firing.iter().find(|f| f.alert == "drop").unwrap();
    assert_eq!((drop.value, drop.threshold), (Some(40.0), Some(20.0)));
}

#[tokio::test]
async fn a_503_then_200_is_delivered_with_the_same_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![503, 200]);
    let clock = TestClock::new();
    let metrics = AlertMetrics::default();
    let config = low_below_300(&receiver.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        metrics.clone(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let pending = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Pending), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].last_status, Some(503));
    let next = pending[0].next_attempt.unwrap();
    assert!(next > clock.now() && next <= clock.now() + Duration::from_secs(5));
    // Not due yet: nothing attempted.
    assert_eq!(alerts.deliver_due().await.unwrap(), 0);
    clock.advance(Duration::from_secs(6));
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].id, received[1].id);
    assert!(received.iter().all(|r| r.valid));
    assert_eq!(received[0].body, received[1].body);
    let delivered = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Delivered), None, 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].attempts, 2);
    assert_eq!(delivered[0].last_status, Some(200));
    assert_eq!(delivered[0].webhook_id, received[0].id);
}

/// An endpoint that answers every request with `307 Temporary Redirect` to `to` (a 307 keeps
/// the method and the body: a client that follows it would post the signed delivery there).
struct Redirector {
    url: String,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Redirector {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Redirector {
    fn start(to: &str) -> Self {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (to, counter) = (to.to_owned(), hits.clone());
        let (base, handle) = crate::helpers::serve_loopback(move || {
            let (to, counter) = (to.clone(), counter.clone());
            web::to(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let to = to.clone();
                async move {
                    HttpResponse::TemporaryRedirect()
                        .insert_header(("location", to))
                        .finish()
                }
            })
        });
        let url = format!("{base}/hook");
        Self { url, hits, handle }
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_the_delivery_fails_and_nothing_reaches_the_other_host() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let redirector = Redirector::start(&receiver.url);
    let clock = TestClock::new();
    let config = low_below_300(&redirector.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let failed = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Failed), None, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "a 3xx is a failed delivery, not retried");
    assert_eq!(failed[0].attempts, 1);
    assert_eq!(failed[0].last_status, Some(307));
    assert_eq!(redirector.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        receiver.received().is_empty(),
        "the delivery followed the redirect to another host"
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_back_off_and_given_up_after_24_hours() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![500]);
    let clock = TestClock::new();
    let config = low_below_300(&receiver.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    let mut attempts = 0;
    for _ in 0..100 {
        attempts += alerts.deliver_due().await.unwrap();
        clock.advance(Duration::from_secs(3_600));
    }
    let failed = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Failed), None, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap()
        .starts_with("given up after 24 h"));
    // Hourly at most once the back-off is at its cap: about 24 attempts, never past the day.
    assert!((20..=30).contains(&attempts), "{attempts}");
    assert_eq!(receiver.received().len(), attempts);
}

#[tokio::test]
async fn pending_deliveries_are_delivered_after_a_restart_without_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = low_below_300(&receiver.url);
    {
        let history = history(sqlite_url(&dir)).await;
        let alerts = engine(
            config.clone(),
            history.clone(),
            &clock,
            AlertMetrics::default(),
        );
        alerts.on_reading("a", Metric::Device, 250.0, clock.now());
        alerts.flush().await;
        // Stopped before any attempt.
        drop(alerts);
        history.store().unwrap().close().await;
    }
    assert!(receiver.received().is_empty());
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    // Still firing after the restart: no second event.
    alerts.on_reading("a", Metric::Device, 240.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(events(&alerts).await.len(), 1);
}

#[tokio::test]
async fn a_changed_or_removed_rule_resolves_its_firing_states_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![
            rule("low", &["a"], Condition::Below(300.0)),
            rule("gone", &["a"], Condition::Above(100.0)),
        ],
        webhooks: vec![],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 2);
    alerts.reload(AlertsConfig {
        rules: vec![rule("low", &["a"], Condition::Below(200.0))],
        webhooks: vec![],
    });
    alerts.flush().await;
    let all = events(&alerts).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all[2..].iter().all(|(kind, _)| kind == "alert.resolved"));
    assert!(alerts.firing(None).await.unwrap().is_empty());
    // The new definition is evaluated from scratch.
    alerts.on_reading("a", Metric::Device, 150.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 5);
}

#[tokio::test]
async fn on_postgresql_two_replicas_write_one_event_and_deliver_it_once() {
    let url = postgres::shared().database().await;
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![rule("low", &["a", "b"], Condition::Below(300.0))],
        webhooks: vec![webhook("psa", &receiver.url)],
    };
    let first = engine(
        config.clone(),
        history(url.clone()).await,
        &clock,
        AlertMetrics::default(),
    );
    let second = engine(config, history(url).await, &clock, AlertMetrics::default());
    for replica in [&first, &second] {
        replica.on_reading("a", Metric::Device, 250.0, clock.now());
        replica.on_reading("b", Metric::Device, 250.0, clock.now());
    }
    first.flush().await;
    second.flush().await;
    assert_eq!(events(&first).await.len(), 2);
    let (one, two) = tokio::join!(first.deliver_due(), second.deliver_due());
    assert_eq!(one.unwrap() + two.unwrap(), 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_ne!(received[0].id, received[1].id);
    // Resolved once, whichever replica sees the recovery.
    first.on_reading("a", Metric::Device, 350.0, clock.now());
    second.on_reading("a", Metric::Device, 350.0, clock.now());
    first.flush().await;
    second.flush().await;
    assert_eq!(events(&second).await.len(), 3);
}

/// A gateway with two tenants in scope of a rule, a webhook answering 400, and keys.
#[tokio::test]
async fn the_api_scopes_alerts_by_key_and_lists_failed_deliveries_to_operators() {
    let receiver = Receiver::start(vec![400]);
    let (contoso, contoso_digest) = scoregate::auth::generate_key().unwrap();
    let (operator, operator_digest) = scoregate::auth::generate_key().unwrap();
    let extra = format!(
        "[[api_keys]]\nname = \"contoso\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"operator\"\nsha256 = \"{operator_digest}\"\ntenants = [\"*\"]\noperator = true\n\n\
         [[alerts]]\nname = \"low\"\nmetric = \"device\"\nbelow = 100000\n\n\
         [[webhooks]]\nname = \"psa\"\nurl = \"{}\"\nsecret = {{ env = \"PSA_SECRET\" }}\n",
        receiver.url
    );
    let app = spawn_app_with_config(
        emulator_options(2, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true"), ("PSA_SECRET", SECRET)],
        &extra,
    )
    .await;
    let tenants: Vec<String> = app
        .emulator
        .tenants()
        .iter()
        .map(|t| t.slug.clone())
        .collect();
    assert!(tenants.contains(&"contoso".to_owned()), "{tenants:?}");
    let alerts = app.services.alerts().expect("alerts are on").clone();
    for tenant in &tenants {
        alerts.on_reading(tenant, Metric::Device, 250.0, OffsetDateTime::now_utc());
    }
    alerts.flush().await;
    let get = |path: &str, key: &str| {
        app.client
            .get(format!("{}{path}", app.address))
            .bearer_auth(key)
            .send()
    };
    let body: serde_json::Value = get("/alerts", &contoso)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen: BTreeSet<&str> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(seen, BTreeSet::from(["contoso"]));
    assert_eq!(body["alerts"][0]["threshold"], 100000.0);
    let body: serde_json::Value = get("/alerts", &operator)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    let body: serde_json::Value = get("/alerts/events?limit=1", &contoso)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["tenant"], "contoso");
    assert!(body["next_cursor"].is_null());
    let response = get("/alerts/events?limit=1", &operator).await.unwrap();
    assert!(response.headers().get("link").is_some());
    let body: serde_json::Value = response.json().await.unwrap();
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let body: serde_json::Value = get(
        &format!("/alerts/events?limit=1&cursor={cursor}"),
        &operator,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert!(body["next_cursor"].is_null());
    // Bad input names the parameter.
    for (path, parameter) in [
        ("/alerts/events?since=yesterday", "since"),
        ("/alerts/events?limit=0", "limit"),
        ("/alerts/events?cursor=xyz", "cursor"),
        ("/webhooks/deliveries?status=lost", "status"),
    ] {
        let response = get(path, &operator).await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_request");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(parameter),
            "{problem}"
        );
    }
    // The gateway's own workers deliver: 400 is final.
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let body: serde_json::Value = get("/webhooks/deliveries?status=failed", &operator)
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["deliveries"].as_array().unwrap().len() == 2 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both deliveries fail");
    assert_eq!(failed["deliveries"][0]["last_status"], 400);
    assert_eq!(failed["deliveries"][0]["attempts"], 1);
    assert_eq!(receiver.received().len(), 2);
    assert!(receiver.received().iter().all(|r| r.valid));
    // Not for other keys: the 404 of a route that does not exist.
    let response = get("/webhooks/deliveries", &contoso).await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "not_found");
    // Metrics: events by alert and type, deliveries by outcome, the outbox.
    let text = get("/metrics", &operator)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("scoregate_alert_events_total{alert=\"low\",type=\"alert.firing\"} 2"),
        "{text}"
    );
    assert!(text.contains("scoregate_alert_events_total{alert=\"low\",type=\"alert.resolved\"} 0"));
    assert!(text.contains("scoregate_webhook_deliveries_total{outcome=\"failed\"} 2"));
    assert!(text.contains("scoregate_webhook_deliveries_total{outcome=\"retried\"} 0"));
    assert!(text.contains("scoregate_webhook_outbox_pending 0"));
    assert!(!text.contains(SECRET));
}
