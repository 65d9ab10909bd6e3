//! Issue 10, start-up and shutdown as the process runs them: a failed bind leaves nothing
//! running behind it, and `scoregate serve` drains on SIGTERM through its own signal path.

use crate::helpers::{emulator_options, fault};
use scoregate::app::Application;
use scoregate::config::Config;
use scoregate::emulator::{EmulatorOptions, FaultProfile, LatencyRange};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn a_failed_bind_leaves_no_refresher_calling_defender() {
    let emulator = crate::helpers::start_emulator(emulator_options(2, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let path = emulator.write_config(dir.path()).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let env = |bind: &str| {
        vec![
            ("SCOREGATE__SERVER__BIND".to_owned(), bind.to_owned()),
            ("SCOREGATE__REFRESH__ENABLED".to_owned(), "true".to_owned()),
            // The first round at once: a refresher left running would call Defender right away.
            (
                "SCOREGATE__REFRESH__STARTUP_SPREAD_SECONDS".to_owned(),
                "0".to_owned(),
            ),
        ]
    };
    let config = Config::load_with_env(&path, env(&bind)).unwrap();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let tasks_before = tasks();
    let error = match Application::build(&config) {
        Ok(_) => panic!("the gateway started on an address in use"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(&format!("cannot listen on {bind}")),
        "{error}"
    );
    // Nothing was left behind: no refresher, nor the task that waits to stop it (which,
    // spawned before the bind, would wait forever on a shutdown that never comes). Awaited,
    // not sampled: the services' own tasks end soon after they are dropped; that one never.
    let settled = async {
        while tasks() != tasks_before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .is_err()
    {
        panic!(
            "tasks left running: {} before, {} now",
            tasks_before,
            tasks()
        );
    }
    // With no task left, nothing can call Defender any more: what has not happened yet never
    // will.
    let stats = emulator.stats();
    assert_eq!(stats.total.score_calls, 0, "{stats:?}");
    assert_eq!(stats.total.token_requests, 0, "{stats:?}");

    // The same configuration on a free port: its refresher does reach Defender.
    let config = Config::load_with_env(&path, env("127.0.0.1:0")).unwrap();
    let application = Application::build(&config).expect("the gateway starts");
    let shutdown = application.shutdown_token();
    let started = std::time::Instant::now();
    while emulator.stats().total.score_calls < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the refresher fetches every tenant"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    drop(taken);
}

/// Every line the child writes to stderr, as it comes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first JSON log line whose message is `message`.
    fn find(&self, message: &str) -> Option<serde_json::Value> {
        self.all()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["message"] == message)
    }

    async fn wait_for(&self, message: &str) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            if let Some(event) = self.find(message) {
                return event;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {message:?} in {:#?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_zero() {
    let emulator = crate::helpers::start_emulator(EmulatorOptions {
        slow_latency: LatencyRange {
            min_ms: 700,
            max_ms: 800,
        },
        ..emulator_options(2, vec![fault(FaultProfile::Slow, &["contoso"])])
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = emulator.write_config(dir.path()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env("SCOREGATE__SERVER__BIND", "127.0.0.1:0")
        .env("SCOREGATE__SERVER__WORKERS", "2")
        .env("SCOREGATE__REFRESH__ENABLED", "false")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("scoregate starts");
    let lines = Lines::default();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            sink.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let listening = lines.wait_for("scoregate is listening").await;
    let address = format!("http://{}", listening["address"].as_str().unwrap());

    let url = format!("{address}/tenants/contoso/score");
    let slow = tokio::spawn(async move { reqwest::Client::new().get(url).send().await });
    let started = std::time::Instant::now();
    while emulator.stats().tenant("contoso").in_flight == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the request reaches Defender"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let pid = child.id().expect("still running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    lines
        .wait_for("stopping: no new connections, finishing requests in flight")
        .await;
    // The listener closes at once; a fresh connection (no pooled one) is refused while the
    // slow request is still being served (bounded by that request, not by a clock).
    loop {
        let attempt = reqwest::Client::new()
            .get(format!("{address}/healthz"))
            .send()
            .await;
        if attempt.is_err() {
            break;
        }
        assert!(
            !slow.is_finished(),
            "new connections are still accepted after SIGTERM, until the slow request ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!slow.is_finished(), "refused while the slow request runs");

    let response = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tenant"], "contoso");
    assert_eq!(body["source"], "upstream");

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("scoregate exits within the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{:#?}", lines.all());
    // The reader task may still be draining the pipe's last lines.
    let stopped = lines.wait_for("scoregate stopped").await;
    assert_eq!(stopped["level"], "INFO");
    assert_eq!(emulator.stats().tenant("contoso").score_calls, 1);
}
