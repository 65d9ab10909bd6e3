//! Alerts: the rig the `alerts_*` modules share (an engine on a history, a clock the tests move,
//! a receiver that verifies Standard Webhooks signatures, written here from the specification,
//! not with the gateway's signer) and the API routes. The rules are tested in `alerts_rules`,
//! the outbox across restarts and replicas (SQLite and a real PostgreSQL) in `alerts_delivery`.

use crate::helpers::{emulator_options, spawn_app_with_config};
use actix_web::{web, HttpRequest, HttpResponse};
use scoregate::alerts::{Alerts, AlertsConfig, Condition, Options, Rule, Webhook, WebhookSecret};
use scoregate::config::HistoryConfig;
use scoregate::history::{History, Metric};
use scoregate::metrics::{AlertMetrics, HistoryMetrics};
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
            controls: false,
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
    // Metrics: events by alert and type, deliveries by outcome, the outbox. The outbox gauge
    // is refreshed by the worker after it records a delivery: awaited, not raced.
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = get("/metrics", &operator)
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains("scoregate_webhook_outbox_pending 0") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the outbox drains");
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
