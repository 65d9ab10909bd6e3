//! The history writer: through a database outage without blocking the caller, the periodic
//! job on the clock it is given, and a full buffer that drops readings instead of waiting.

use crate::history::reading;
use crate::postgres::PgServer;
use scoregate::config::HistoryConfig;
use scoregate::history::{History, Interval, Metric, Store};
use scoregate::metrics::HistoryMetrics;
use secrecy::SecretString;
use std::time::{Duration, Instant};
use time::macros::datetime;
use time::OffsetDateTime;

fn config(url: String, buffer: usize) -> HistoryConfig {
    HistoryConfig {
        enabled: true,
        url: SecretString::from(url),
        retention_days: 400,
        alerts_retention_days: 400,
        buffer,
        controls: false,
    }
}

#[tokio::test]
async fn the_writer_survives_a_database_outage_and_never_blocks_the_caller() {
    let server = PgServer::start();
    let url = server.database().await;
    let history = std::sync::Arc::new(History::start(
        &config(url, 1_000),
        HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
    ));
    let now = OffsetDateTime::now_utc();
    history.record(reading("contoso", now, 300.0));
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("connected and written");
    server.stop();
    // Recorded on a thread of their own, so that a `record` that waited for the database
    // fails the test (it would wait for the whole outage) instead of hanging it.
    let recording = tokio::task::spawn_blocking({
        let history = history.clone();
        move || {
            for minute in 1..=50 {
                history.record(reading(
                    "contoso",
                    now + time::Duration::minutes(minute),
                    300.0 + minute as f64,
                ));
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), recording)
        .await
        .expect("recording waited for the database")
        .unwrap();
    // Every `record` returned with its reading queued, none written: nothing can be while the
    // database is down, so none of them waited for its write.
    let stats = history.stats();
    assert_eq!(
        (stats.written, stats.dropped, stats.pending),
        (1, 0, 50),
        "{stats:?}"
    );
    // The writer meets the outage, keeps the readings and retries.
    let deadline = Instant::now() + Duration::from_secs(10);
    while history.stats().failed_batches == 0 {
        assert!(
            Instant::now() < deadline,
            "no failed batch during the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.start_again();
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("the writer resumed by itself");
    let stats = history.stats();
    assert_eq!((stats.written, stats.dropped, stats.pending), (51, 0, 0));
    let points = history
        .store()
        .unwrap()
        .history(
            "contoso",
            Metric::Device,
            now - time::Duration::hours(1),
            now + time::Duration::hours(2),
            Interval::Day,
        )
        .await
        .unwrap();
    assert_eq!(points.iter().map(|p| p.samples).sum::<i64>(), 51);
}

#[tokio::test]
async fn the_periodic_job_rolls_up_and_deletes_by_the_clock_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/h.db?mode=rwc", dir.path().display());
    let day = datetime!(2026-01-10 0:00 UTC);
    // Seeded before the job starts: two hours of the 10th and one of the 12th.
    let seeded = Store::connect(&url).await.unwrap();
    seeded
        .write(&[
            reading("contoso", day + time::Duration::hours(1), 300.0),
            reading("contoso", day + time::Duration::hours(2), 310.0),
            reading(
                "contoso",
                day + time::Duration::days(2) + time::Duration::hours(3),
                320.0,
            ),
        ])
        .await
        .unwrap();
    seeded.close().await;
    // "Now" is 402 days after the 10th: the 10th is past retention, the 12th's 03:00 hour is
    // rolled up into its day (00:00).
    let now = day + time::Duration::days(402);
    let mut config = config(url, 10);
    config.retention_days = 400;
    let history = History::start_with_clock(
        &config,
        HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
        std::sync::Arc::new(move || now),
        Duration::from_millis(20),
    );
    tokio::time::timeout(Duration::from_secs(10), history.flush())
        .await
        .unwrap();
    let store = history.store().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let points = store
            .history(
                "contoso",
                Metric::Device,
                day,
                day + time::Duration::days(5),
                Interval::Hour,
            )
            .await
            .unwrap();
        let summary: Vec<_> = points.iter().map(|p| (p.at, p.samples)).collect();
        if summary == vec![(day + time::Duration::days(2), 1)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not run: {summary:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_full_buffer_drops_readings_instead_of_waiting() {
    // Nothing listens there: the writer keeps trying to connect; the buffer holds two.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let history = History::start(
        &config(format!("postgres://nobody@127.0.0.1:{port}/none"), 2),
        HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
    );
    let now = OffsetDateTime::now_utc();
    for minute in 0..5 {
        history.record(reading(
            "contoso",
            now + time::Duration::minutes(minute),
            1.0,
        ));
    }
    history.record(reading("contoso", now, f64::NAN));
    let stats = history.stats();
    assert_eq!((stats.pending, stats.dropped, stats.written), (2, 4, 0));
    assert!(matches!(
        history.store(),
        Err(scoregate::history::HistoryError::NotConnected)
    ));
}

// --- The routes -------------------------------------------------------------------------------
