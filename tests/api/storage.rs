//! Storage health: the history and alert writes through a full disk (simulated with SQLite's
//! `max_page_count`, the limit a full file system imposes), nothing reported written that is
//! not committed, and everything moving again by itself once the space is back.

use actix_web::{web, HttpResponse};
use scoregate::alerts::{Alerts, AlertsConfig, Condition, Options, Rule, Webhook, WebhookSecret};
use scoregate::config::HistoryConfig;
use scoregate::history::{History, Metric, Reading, Store};
use scoregate::metrics::{AlertMetrics, HistoryMetrics};
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
    Reading {
        tenant,
        metric: Metric::Device,
        at,
        score,
        max_score: None,
    }
}

/// The history over the SQLite database at `url`, connected.
async fn history(url: &str, metrics: HistoryMetrics) -> Arc<History> {
    let history = Arc::new(History::start(
        &HistoryConfig {
            enabled: true,
            url: SecretString::from(url.to_owned()),
            retention_days: 400,
            buffer: 10_000,
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

/// Rule `low` (tenant `a`'s device score below 300) delivered to the webhook at `hook`, with
/// `now` for the clock and no background timer or worker (the test drives them).
fn alerts(history: Arc<History>, hook: &str, now: OffsetDateTime) -> Alerts {
    Alerts::start_with(
        AlertsConfig {
            rules: vec![Rule {
                name: "low".to_owned(),
                metric: Metric::Device,
                tenants: ["a".to_owned()].into_iter().collect(),
                condition: Condition::Below(300.0),
            }],
            webhooks: vec![Webhook {
                name: "psa".to_owned(),
                url: hook.parse().unwrap(),
                secret: WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
                alerts: None,
                timeout: Duration::from_secs(5),
            }],
        },
        history,
        scoregate::upstream::webhook_client(&scoregate::config::UpstreamSettings::default(), None)
            .unwrap(),
        AlertMetrics::default(),
        &tokio::runtime::Handle::current(),
        Options {
            clock: Arc::new(move || now),
            tick_period: None,
            poll_period: None,
        },
    )
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
    let padding = "x".repeat(100);
    for index in 0..2_000 {
        history.record(reading(
            format!("tenant-{index:05}-{padding}"),
            now,
            f64::from(index),
        ));
    }
    // Four failures: each connection of the pool (at most three so far) has failed a write.
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
