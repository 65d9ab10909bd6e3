//! Logs: one JSON log line per request with its fields, and no secret or token in any log line
//! or in the metrics under authentication failures.

use crate::helpers::{captured_logs, emulator_options, fault, spawn_app};
use scoregate::emulator::FaultProfile;
use std::sync::{Arc, Mutex};

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_writes_one_json_log_line_with_its_fields() {
    // The gateway's own app, called in-process on this thread, under the JSON subscriber that
    // `--log-format json` installs (the test binary's global subscriber is text).
    let app = spawn_app(emulator_options(2, vec![])).await;
    let config =
        scoregate::config::Config::load_with_env(&app.config_path, app.overrides.clone()).unwrap();
    let services = scoregate::service::Services::build(&config).unwrap();
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = scoregate::telemetry::json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    let guard = tracing::subscriber::set_default(subscriber);
    let service = actix_web::test::init_service(scoregate::api::app(services)).await;
    let request = actix_web::test::TestRequest::get()
        .uri("/tenants/contoso/score")
        .insert_header(("x-request-id", "ops-json-1"))
        .to_request();
    let response = actix_web::test::call_service(&service, request).await;
    assert_eq!(response.status().as_u16(), 200);
    let request = actix_web::test::TestRequest::get()
        .uri("/tenants/nobody/score")
        .insert_header(("x-request-id", "ops-json-2"))
        .to_request();
    let response = actix_web::test::call_service(&service, request).await;
    assert_eq!(response.status().as_u16(), 404);
    drop(guard);

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}")))
        .filter(|line: &serde_json::Value| line["message"] == "request")
        .collect();
    assert_eq!(lines.len(), 2, "one line per request:\n{text}");
    for (line, (id, tenant, status)) in lines.iter().zip([
        ("ops-json-1", "contoso", 200),
        ("ops-json-2", "nobody", 404),
    ]) {
        assert_eq!(line["request_id"], id, "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["route"], "/tenants/{id}/score", "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["tenant"], tenant, "{line}");
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn no_secret_or_token_appears_in_any_log_line_or_the_metrics_under_auth_failures() {
    let app = spawn_app(emulator_options(
        5,
        vec![
            fault(FaultProfile::Revoked, &["fabrikam"]),
            fault(FaultProfile::ExpiredSecret, &["northwind"]),
            fault(FaultProfile::Forbidden, &["litware"]),
            fault(FaultProfile::Unlicensed, &["adatum"]),
        ],
    ))
    .await;
    for slug in ["contoso", "fabrikam", "northwind", "litware", "adatum"] {
        let _ = app.get(&format!("/tenants/{slug}/score")).await;
        let _ = app.get(&format!("/tenants/{slug}/score?max_age=0")).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let logs = captured_logs();
    assert!(
        logs.contains("Defender refused the call"),
        "failures were logged"
    );
    for secret in app.secrets() {
        assert!(!logs.contains(&secret), "a secret in the logs");
        assert!(!metrics.contains(&secret), "a secret in the metrics");
    }
    // Bearer tokens are JWTs: base64url of `{"` starts every one of them.
    assert!(!logs.contains("eyJ"), "a token in the logs");
    assert!(!metrics.contains("eyJ"), "a token in the metrics");
    for tenant in app.emulator.tenants() {
        assert!(
            !metrics.contains(&tenant.client_id.to_string()),
            "client ids stay out of metrics"
        );
    }
}
