//! Stopping and reloading: a graceful stop lets slow requests in flight finish, and a live
//! reload (file change or SIGHUP) adds, removes and rotates, or refuses and keeps serving.

use crate::helpers::{captured_logs, emulator_options, fault, spawn_app, spawn_app_with_config};
use crate::operations::{sample, scrape};
use scoregate::emulator::{EmulatorOptions, FaultProfile, LatencyRange};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_graceful_stop_lets_slow_requests_in_flight_finish() {
    let app = spawn_app(EmulatorOptions {
        slow_latency: LatencyRange {
            min_ms: 700,
            max_ms: 800,
        },
        ..emulator_options(2, vec![fault(FaultProfile::Slow, &["contoso"])])
    })
    .await;
    let client = app.client.clone();
    let url = format!("{}/tenants/contoso/score", app.address);
    let slow = tokio::spawn(async move { client.get(url).send().await });
    // Let the request reach the gateway and the emulator (bounded at 10 s, not 1 s: a loaded
    // machine may take a while to get there).
    for _ in 0..500 {
        if app.emulator.stats().tenant("contoso").in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.emulator.stats().tenant("contoso").in_flight, 1);

    let started = std::time::Instant::now();
    let stop = tokio::spawn(app.server.stop(true));
    let response = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["source"], "upstream");
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("the server stops within the grace period")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // Stopped: new connections are refused.
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed");
}

/// The configuration file without the `[[tenants]]` entry of `slug` (what follows it, such as
/// an `[[alerts]]` table after the last tenant, stays).
fn without_tenant(config: &str, slug: &str) -> String {
    let mut out = String::new();
    for (index, block) in config.split("\n[[tenants]]\n").enumerate() {
        if index == 0 {
            out.push_str(block);
        } else if let Some(entry) = block.strip_prefix(&format!("id = \"{slug}\"\n")) {
            if let Some(next) = entry.find("\n[[") {
                out.push_str(&entry[next..]);
            }
        } else {
            out.push_str("\n[[tenants]]\n");
            out.push_str(block);
        }
    }
    out
}

#[tokio::test]
async fn a_reload_adds_and_removes_tenants_and_rotates_secrets_while_traffic_flows() {
    let app = Arc::new(spawn_app(emulator_options(3, vec![])).await);
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    assert!(original.contains("id = \"fabrikam\"\n"), "{original}");
    // fabrikam's score is cached, so that the reload must drop it.
    assert_eq!(
        app.get("/tenants/fabrikam/score").await.status().as_u16(),
        200
    );
    assert_eq!(
        app.get("/tenants/northwind/score").await.status().as_u16(),
        200
    );
    let before = scrape(&app).await;
    assert!(sample(
        &before,
        "scoregate_tenant_score",
        &[("tenant", "fabrikam"), ("metric", "device")]
    )
    .is_some());

    // Concurrent traffic for a tenant that stays throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(app.get("/tenants/contoso/score").await.status().as_u16());
                statuses.push(app.get("/tenants").await.status().as_u16());
            }
            statuses
        })
    };

    // Remove fabrikam.
    std::fs::write(&app.config_path, without_tenant(&original, "fabrikam")).unwrap();
    let summary = app.reloader.reload().await.expect("a valid configuration");
    assert_eq!((summary.tenants, summary.added, summary.removed), (2, 0, 1));
    let response = app.get("/tenants/fabrikam/score").await;
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(app.get("/tenants/fabrikam").await.status().as_u16(), 404);
    let (_, _, list) = app.get_json("/tenants").await;
    assert!(!list.to_string().contains("fabrikam"), "{list}");
    assert!(
        !app.services
            .is_fetching(
                &scoregate::tenants::TenantId::parse("fabrikam").unwrap(),
                scoregate::upstream::Metric::Device
            )
            .await
    );
    let after = scrape(&app).await;
    assert!(
        after
            .keys()
            .all(|(_, labels)| labels.get("tenant").map(String::as_str) != Some("fabrikam")),
        "fabrikam's series are gone"
    );
    assert_eq!(sample(&after, "scoregate_tenants", &[]), Some(2.0));

    // Add it back: it is served again, fetched anew (its cached score was dropped).
    let calls_before = app.emulator.stats().tenant("fabrikam").score_calls;
    std::fs::write(&app.config_path, &original).unwrap();
    let summary = app.reloader.reload().await.expect("a valid configuration");
    assert_eq!((summary.tenants, summary.added, summary.removed), (3, 1, 0));
    let (status, _, body) = app.get_json("/tenants/fabrikam/score").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "upstream");
    assert_eq!(
        app.emulator.stats().tenant("fabrikam").score_calls,
        calls_before + 1
    );

    // Rotate northwind's secret to one Entra refuses: the new credential is used at once…
    let secret_file = app
        .config_path
        .parent()
        .unwrap()
        .join(scoregate::emulator::SECRETS_DIR_NAME)
        .join("northwind.secret");
    let good_secret = std::fs::read_to_string(&secret_file).unwrap();
    std::fs::write(&secret_file, "not-the-secret-any-more").unwrap();
    app.reloader.reload().await.expect("a valid configuration");
    let tokens_before = app.emulator.stats().tenant("northwind").token_requests;
    let response = app.get("/tenants/northwind/score?max_age=0").await;
    assert_eq!(response.status().as_u16(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_auth", "{body}");
    assert_eq!(
        app.emulator.stats().tenant("northwind").token_requests,
        tokens_before + 1,
        "the old credential's cached token was dropped"
    );
    // Rotating back: the good secret is read anew at the next reload.
    std::fs::write(&secret_file, &good_secret).unwrap();
    app.reloader.reload().await.expect("a valid configuration");
    let tokens_before = app.emulator.stats().tenant("fabrikam").token_requests;
    app.reloader.reload().await.expect("a valid configuration");
    let (status, _, body) = app.get_json("/tenants/fabrikam/score?max_age=0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.emulator.stats().tenant("fabrikam").token_requests,
        tokens_before + 1,
        "every reloaded registration gets a new credential"
    );

    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|&status| status == 200),
        "concurrent traffic saw errors: {statuses:?}"
    );
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_old_configuration_serving() {
    let app = spawn_app(emulator_options(2, vec![])).await;
    let original = std::fs::read_to_string(&app.config_path).unwrap();

    for broken in [
        format!("{original}\n[[tenants]]\nid = \"bad id!\"\ntenant_id = \"nope\"\nclient_id = \"nope\"\n"),
        "this is = = not toml".to_owned(),
    ] {
        std::fs::write(&app.config_path, &broken).unwrap();
        let error = app.reloader.reload().await.expect_err("an invalid configuration");
        assert!(!error.to_string().is_empty());
        assert_eq!(app.get("/tenants/contoso/score").await.status().as_u16(), 200);
        assert_eq!(app.get("/tenants/fabrikam/score").await.status().as_u16(), 200);
        assert_eq!(app.services.registry().len(), 2);
    }
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line
            .contains("configuration reload refused, still serving the previous configuration")
            && line.contains("tenants[2]")),
        "the reason is logged on one line"
    );
    let samples = scrape(&app).await;
    assert_eq!(
        sample(
            &samples,
            "scoregate_config_reloads_total",
            &[("outcome", "invalid")]
        ),
        Some(2.0)
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_configuration() {
    let app = spawn_app(emulator_options(2, vec![])).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = scoregate::lifecycle::reload_on_sighup(app.reloader.clone(), shutdown.clone())
        .expect("the SIGHUP listener installs");
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, without_tenant(&original, "fabrikam")).unwrap();

    // Other gateways in this test binary install no SIGHUP listener: only this one reloads.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut removed = false;
    for _ in 0..100 {
        if app.services.registry().get("fabrikam").is_none() {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(removed, "SIGHUP reloaded the file");
    assert_eq!(
        app.get("/tenants/fabrikam/score").await.status().as_u16(),
        404
    );
    assert_eq!(
        app.get("/tenants/contoso/score").await.status().as_u16(),
        200
    );
    shutdown.cancel();
    listener.await.unwrap();
}

#[tokio::test]
async fn a_reload_that_removes_a_tenant_resolves_its_firing_alerts() {
    let app = spawn_app_with_config(
        emulator_options(2, vec![]),
        &[],
        "[[alerts]]\nname = \"low\"\nmetric = \"device\"\nbelow = 100000\n",
    )
    .await;
    let slugs: Vec<String> = app.emulator.tenants().into_iter().map(|t| t.slug).collect();
    let (kept, removed) = (&slugs[0], &slugs[1]);
    let alerts = app.services.alerts().unwrap().clone();
    for slug in &slugs {
        let (status, _, body) = app.get_json(&format!("/tenants/{slug}/score")).await;
        assert_eq!(status, 200, "{body}");
    }
    alerts.flush().await;
    let tenants = async || {
        let (status, _, body) = app.get_json("/alerts").await;
        assert_eq!(status, 200, "{body}");
        let mut tenants: Vec<String> = body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["tenant"].as_str().unwrap().to_owned())
            .collect();
        tenants.sort();
        tenants
    };
    assert_eq!(tenants().await, slugs);

    let original = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, without_tenant(&original, removed)).unwrap();
    app.reloader.reload().await.expect("the new file loads");
    alerts.flush().await;

    // The removed tenant's alert is resolved (an event says so) and no longer firing.
    assert_eq!(tenants().await, std::slice::from_ref(kept));
    let (status, _, body) = app.get_json("/alerts/events").await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<(String, String)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let field = |name: &str| event[name].as_str().unwrap().to_owned();
            (field("type"), field("tenant"))
        })
        .collect();
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(
        events[2],
        ("alert.resolved".to_owned(), removed.clone()),
        "{body}"
    );
    let (status, _, body) = app.get_json(&format!("/tenants/{removed}/score")).await;
    assert_eq!(status, 404, "{body}");
    // The tenant that stayed keeps firing: its reading does not fire it again.
    let (status, _, _) = app
        .get_json(&format!("/tenants/{kept}/score?max_age=0"))
        .await;
    assert_eq!(status, 200);
    alerts.flush().await;
    let (_, _, body) = app.get_json("/alerts/events").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(app.emulator.stats().tenant(kept).score_calls, 2);
    assert_eq!(app.emulator.stats().tenant(removed).score_calls, 1);
}
