//! Storage health: the history and alert writes through a full disk (simulated with SQLite's
//! `max_page_count`, the limit a full file system imposes), nothing reported written that is
//! not committed, and everything moving again by itself once the space is back; a SQLite file
//! deleted under a running gateway; the retention of alert events and deliveries (both
//! engines); the alert engine's log while its database fails.

use actix_web::{web, HttpResponse};
use scoregate::alerts::{Alerts, AlertsConfig, Condition, Options, Rule, Webhook, WebhookSecret};
use scoregate::config::HistoryConfig;
use scoregate::history::{History, Metric, Reading, Store};
use scoregate::metrics::{AlertMetrics, HistoryMetrics};
use scoregate::model::TenantId;
use secrecy::SecretString;
use sqlx::{Connection, Row};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Waits (bounded) until `condition` holds.
async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

fn reading(tenant: String, at: OffsetDateTime, score: f64) -> Reading {
    Reading::of_score(TenantId::parse(&tenant).unwrap(), Metric::Device, score, at)
}

/// The history over the database at `url`, connected.
async fn history(url: &str, metrics: HistoryMetrics) -> Arc<History> {
    history_keeping_alerts(url, metrics, 400).await
}

/// [`history`] keeping alert events and finished deliveries `alerts_retention_days`.
async fn history_keeping_alerts(
    url: &str,
    metrics: HistoryMetrics,
    alerts_retention_days: u32,
) -> Arc<History> {
    let history = Arc::new(History::start(
        &HistoryConfig {
            enabled: true,
            url: SecretString::from(url.to_owned()),
            retention_days: 400,
            alerts_retention_days,
            buffer: 10_000,
            controls: false,
        },
        metrics,
        &tokio::runtime::Handle::current(),
    ));
    until("the database connects", || async {
        history.store().is_ok()
    })
    .await;
    history
}

/// A webhook receiver on loopback that answers 204 and counts what it got.
fn receiver() -> (String, Arc<AtomicUsize>, actix_web::dev::ServerHandle) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let (base, handle) = crate::helpers::serve_loopback(move || {
        let counter = counter.clone();
        web::to(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::NoContent().finish() }
        })
    });
    (format!("{base}/hook"), count, handle)
}

/// Rows of `table` seen by a connection of its own (what a restart would find).
async fn committed(url: &str, sql: &str) -> i64 {
    let mut connection = sqlx::AnyConnection::connect(url).await.unwrap();
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let count: i64 = row.try_get(0).unwrap();
    connection.close().await.unwrap();
    count
}

fn below_300(name: &str, tenant: &str) -> Rule {
    Rule {
        name: name.to_owned(),
        metric: Metric::Device,
        tenants: [tenant.to_owned()].into_iter().collect(),
        condition: Condition::Below(300.0),
    }
}

/// Endpoint `name` at `url`, receiving `alerts` (all when `None`).
fn webhook(name: &str, url: &str, alerts: Option<&[&str]>) -> Webhook {
    Webhook {
        name: name.to_owned(),
        url: url.parse().unwrap(),
        secret: WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
        alerts: alerts.map(|names| names.iter().map(|name| name.to_string()).collect()),
        timeout: Duration::from_secs(5),
        allow_private_addresses: false,
    }
}

/// The engine with `config` and `clock`, no background timer nor worker (the test drives them).
fn engine(history: Arc<History>, config: AlertsConfig, clock: scoregate::alerts::Clock) -> Alerts {
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
        AlertMetrics::default(),
        &tokio::runtime::Handle::current(),
        Options {
            clock,
            tick_period: None,
            poll_period: None,
        },
    )
}

/// Rule `low` (tenant `a`'s device score below 300) delivered to the webhook at `hook`, at
/// `now`.
fn alerts(history: Arc<History>, hook: &str, now: OffsetDateTime) -> Alerts {
    let config = AlertsConfig {
        rules: vec![below_300("low", "a")],
        webhooks: vec![webhook("psa", hook, None)],
    };
    engine(history, config, Arc::new(move || now))
}

#[tokio::test]
async fn a_full_disk_loses_nothing_counts_only_commits_and_recovers_when_space_returns() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
    let metrics = HistoryMetrics::default();
    let history = history(&url, metrics.clone()).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    history.record(reading("seed".to_owned(), now, 1.0));
    history.flush().await;
    let (hook, deliveries, _server) = receiver();
    let alerts = alerts(history.clone(), &hook, now);
    let store: Store = history.store().unwrap().clone();

    // The disk fills up: 2,000 readings of as many tenants need pages the database cannot get.
    store.simulate_full_disk(true).await.unwrap();
    let before = history.stats();
    // Ids as long as a tenant id may be (64 characters), so that each row takes room.
    let padding = "x".repeat(51);
    for index in 0..2_000 {
        history.record(reading(
            format!("tenant-{index:05}-{padding}"),
            now,
            f64::from(index),
        ));
    }
    // Four failures: enough for the writer to meet `SQLITE_FULL` on every connection the pool
    // holds by now (each write takes the connection idle the longest).
    until("the writer fails four times", || async {
        history.stats().failed_batches >= before.failed_batches + 4
    })
    .await;
    let full = history.stats();
    assert_eq!(
        full.written, before.written,
        "counted while nothing was committed"
    );
    assert_eq!(full.dropped, 0);
    assert_eq!(full.pending, 2_000, "the readings stay buffered");

    // The space is back, while another process (a backup, the sqlite3 shell) holds the write
    // lock for a moment: the writer's next attempt meets a busy database and fails once more.
    let mut outside = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut outside)
        .await
        .unwrap();
    store.simulate_full_disk(false).await.unwrap();
    let busy = history.stats().failed_batches;
    until("the writer meets the busy database", || async {
        history.stats().failed_batches > busy
    })
    .await;
    sqlx::query("ROLLBACK").execute(&mut outside).await.unwrap();

    // Then everything buffered is committed, by itself.
    tokio::time::timeout(Duration::from_secs(60), history.flush())
        .await
        .expect("the writer resumes by itself");
    // One reading at a time, so that every connection of the pool writes in turn.
    for index in 0..8 {
        history.record(reading(format!("after-{index}"), now, 1.0));
        tokio::time::timeout(Duration::from_secs(60), history.flush())
            .await
            .expect("the writer keeps writing");
    }
    let after = history.stats();
    assert_eq!((after.written, after.dropped, after.pending), (2_009, 0, 0));
    assert_eq!(metrics.written.get(), 2_009);
    // A connection of its own sees every reading: they are committed, not held in a
    // transaction some pooled connection never ends.
    assert_eq!(
        committed(&url, "SELECT COUNT(*) FROM history_points").await,
        2_009
    );
    // Every pooled connection reads what was committed (none answers from a transaction it
    // never ended); in turn, as each query takes the connection idle the longest.
    for _ in 0..8 {
        let row = sqlx::query("SELECT COUNT(*) FROM history_points")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            row.try_get::<i64, _>(0).unwrap(),
            2_009,
            "a stale pooled connection"
        );
    }
    // And the gateway holds no write lock: an outside writer gets in at once.
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(&mut outside)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut outside)
        .await
        .expect("an outside connection can take the write lock");
    sqlx::query("ROLLBACK").execute(&mut outside).await.unwrap();
    outside.close().await.unwrap();

    // Alert state and the webhook outbox move again.
    alerts.on_reading("a", Metric::Device, 250.0, now);
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    assert_eq!(deliveries.load(Ordering::SeqCst), 1);
    assert_eq!(
        committed(
            &url,
            "SELECT COUNT(*) FROM alert_states WHERE state = 'firing'"
        )
        .await,
        1
    );
    assert_eq!(
        committed(
            &url,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_failing_database_gives_a_few_alert_log_lines_not_one_per_reading() {
    crate::helpers::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
    let history = history(&url, HistoryMetrics::default()).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let alerts = alerts(history.clone(), "http://127.0.0.1:9/hook", now);
    let pool = history.store().unwrap().pool().clone();
    // Every evaluation fails at its first statement (no other test touches this table).
    sqlx::query("ALTER TABLE alert_fetches RENAME TO alert_fetches_away")
        .execute(&pool)
        .await
        .unwrap();
    for _ in 0..200 {
        alerts.on_reading("a", Metric::Device, 350.0, now);
    }
    alerts.flush().await;
    let failing = |logs: &str| {
        logs.lines()
            .filter(|line| line.contains("alerts: evaluation failed"))
            .filter(|line| line.contains("no such table: alert_fetches"))
            .count()
    };
    // The first failure, then at most one summary per 30 s: far fewer than 200 lines.
    let lines = failing(&crate::helpers::captured_logs());
    assert!((1..10).contains(&lines), "{lines} lines for 200 failures");
    sqlx::query("ALTER TABLE alert_fetches_away RENAME TO alert_fetches")
        .execute(&pool)
        .await
        .unwrap();
    alerts.on_reading("a", Metric::Device, 350.0, now);
    alerts.flush().await;
    let logs = crate::helpers::captured_logs();
    assert!(
        logs.contains("alerts: evaluation works again after 200 failure(s)"),
        "no recovery line"
    );
}

/// Old events and finished deliveries go; a pending delivery and its event stay, however old.
async fn check_alert_retention(url: &str) {
    let history = history_keeping_alerts(url, HistoryMetrics::default(), 30).await;
    let (hook, _, _server) = receiver();
    let start = time::macros::datetime!(2026-01-10 12:00 UTC);
    let now = Arc::new(std::sync::Mutex::new(start));
    let clock = now.clone();
    // `low` goes to `psa` only; `lowb` to `psa` and to `dead`, an endpoint that never answers.
    let config = AlertsConfig {
        rules: vec![below_300("low", "a"), below_300("lowb", "b")],
        webhooks: vec![
            webhook("psa", &hook, None),
            webhook("dead", "http://127.0.0.1:9/hook", Some(&["lowb"])),
        ],
    };
    let alerts = engine(history, config, Arc::new(move || *clock.lock().unwrap()));
    alerts.on_reading("a", Metric::Device, 250.0, start);
    alerts.on_reading("b", Metric::Device, 250.0, start);
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 3);
    let statuses = |deliveries: Vec<scoregate::alerts::Delivery>| {
        let mut statuses: Vec<String> = deliveries
            .iter()
            .map(|delivery| format!("{}:{}", delivery.webhook, delivery.status.as_str()))
            .collect();
        statuses.sort();
        statuses
    };
    assert_eq!(
        statuses(alerts.deliveries(None, None, 100).await.unwrap()),
        ["dead:pending", "psa:delivered", "psa:delivered"]
    );
    // 29 days later nothing is old enough; 31 days later the firing events of 10 January are.
    *now.lock().unwrap() = start + time::Duration::days(29);
    assert_eq!(alerts.enforce_retention().await.unwrap(), (0, 0));
    *now.lock().unwrap() = start + time::Duration::days(31);
    assert_eq!(alerts.enforce_retention().await.unwrap(), (1, 2));
    assert_eq!(
        statuses(alerts.deliveries(None, None, 100).await.unwrap()),
        ["dead:pending"]
    );
    let events = alerts
        .events(&scoregate::alerts::EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let kept: Vec<String> = events
        .iter()
        .map(|(_, event)| format!("{}/{}", event.alert, event.tenant))
        .collect();
    assert_eq!(kept, ["lowb/b"], "the pending delivery keeps its event");
    // The state is not an event: `a` is still firing, and fires no second time.
    assert_eq!(alerts.firing(None).await.unwrap().len(), 2);
    alerts.on_reading("a", Metric::Device, 240.0, start + time::Duration::days(31));
    alerts.flush().await;
    let events = alerts
        .events(&scoregate::alerts::EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "no new event for a pair still firing");
}

#[tokio::test]
async fn alert_events_and_finished_deliveries_follow_their_retention_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check_alert_retention(&format!(
        "sqlite://{}/history.db?mode=rwc",
        dir.path().display()
    ))
    .await;
}

#[tokio::test]
async fn alert_events_and_finished_deliveries_follow_their_retention_on_postgres() {
    let url = crate::postgres::shared().database().await;
    check_alert_retention(&url).await;
}

#[tokio::test]
async fn a_deleted_sqlite_file_fails_readiness_and_shows_in_the_metrics_and_the_log() {
    let app = crate::helpers::spawn_app(crate::helpers::emulator_options(1, vec![])).await;
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let file = app.config_path.parent().unwrap().join("scoregate.db");
    assert!(
        file.is_file(),
        "the default database beside the configuration"
    );
    std::fs::remove_file(&file).unwrap();
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("was deleted while open"), "{reason}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("scoregate_history_file_lost 1"),
        "{metrics}"
    );
    assert!(crate::helpers::captured_logs()
        .contains("history: the history database file was deleted while open"));
}
