//! Alerts at the process level: a real `scoregate serve` stopped with SIGTERM or `kill -9` while
//! a delivery is pending delivers it after a restart, with the same `webhook-id`, and writes no
//! second event; and the demo shows an alert arriving at its receiver within seconds.

use crate::alerts_e2e::{eventually, BOUND};
use crate::helpers::emulator_options;
use scoregate::alerts::WebhookSecret;
use secrecy::ExposeSecret;
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

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
