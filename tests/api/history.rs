//! The score history: the store on SQLite and on a real PostgreSQL (hourly deduplication,
//! back-fill, roll-up and retention with a moved clock, `changes`, the portfolio), the writer
//! through a database outage, and the two routes (status, body, CSV, scoping, every 400).

use crate::helpers::{emulator_options, spawn_app_with, spawn_app_with_config, TestApp};
use crate::postgres::{self, PgServer};
use scoregate::auth::generate_key;
use scoregate::config::HistoryConfig;
use scoregate::history::{DailySnapshot, History, Interval, Metric, Reading, Store};
use scoregate::metrics::HistoryMetrics;
use scoregate::model::TenantId;
use secrecy::SecretString;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use time::macros::datetime;
use time::OffsetDateTime;

fn reading(tenant: &str, at: OffsetDateTime, score: f64) -> Reading {
    Reading::of_score(TenantId::parse(tenant).unwrap(), Metric::Device, score, at)
}

/// A migrated SQLite store in a temporary directory (kept alive by the returned guard).
async fn sqlite() -> (Store, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
    (Store::connect(&url).await.unwrap(), Some(dir))
}

/// A migrated store in a new database of the shared PostgreSQL.
async fn postgres() -> (Store, Option<tempfile::TempDir>) {
    let url = postgres::shared().database().await;
    (Store::connect(&url).await.unwrap(), None)
}

/// Runs `check` against SQLite and against PostgreSQL, as two tests.
macro_rules! on_both_engines {
    ($name:ident, $check:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$check(&store).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                let (store, _dir) = super::postgres().await;
                super::$check(&store).await;
            }
        }
    };
}

on_both_engines!(readings_are_kept_one_point_per_hour, check_hourly_points);
on_both_engines!(backfill_gives_ninety_daily_points, check_backfill);
on_both_engines!(
    roll_up_and_retention_follow_the_clock,
    check_roll_up_and_retention
);
on_both_engines!(
    changes_are_the_scores_at_the_ends_of_past_days,
    check_changes
);
on_both_engines!(the_portfolio_covers_only_the_given_tenants, check_portfolio);

async fn check_hourly_points(store: &Store) {
    // Out of order on purpose: the latest reading of the hour is `last`, whatever the order.
    store
        .write(&[
            reading("contoso", datetime!(2026-11-28 10:05 UTC), 300.0),
            reading("contoso", datetime!(2026-11-28 10:50 UTC), 310.0),
        ])
        .await
        .unwrap();
    store
        .write(&[
            reading("contoso", datetime!(2026-11-28 10:20 UTC), 280.0),
            reading("contoso", datetime!(2026-11-28 11:10 UTC), 320.0),
            reading("fabrikam", datetime!(2026-11-28 10:30 UTC), 100.0),
        ])
        .await
        .unwrap();
    let from = datetime!(2026-11-28 0:00 UTC);
    let to = datetime!(2026-11-29 0:00 UTC);
    let hours = store
        .history("contoso", Metric::Device, from, to, Interval::Hour)
        .await
        .unwrap();
    let summary: Vec<_> = hours
        .iter()
        .map(|p| (p.at, p.score, p.min, p.max, p.samples))
        .collect();
    assert_eq!(
        summary,
        vec![
            (datetime!(2026-11-28 10:00 UTC), 310.0, 280.0, 310.0, 3),
            (datetime!(2026-11-28 11:00 UTC), 320.0, 320.0, 320.0, 1),
        ]
    );
    let days = store
        .history("contoso", Metric::Device, from, to, Interval::Day)
        .await
        .unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(
        (
            days[0].at,
            days[0].score,
            days[0].min,
            days[0].max,
            days[0].samples
        ),
        (datetime!(2026-11-28 0:00 UTC), 320.0, 280.0, 320.0, 4)
    );
    // Another metric of the same tenant is another series.
    let exposure = store
        .history("contoso", Metric::Exposure, from, to, Interval::Hour)
        .await
        .unwrap();
    assert!(exposure.is_empty());
}

async fn check_backfill(store: &Store) {
    assert!(!store.has_points("contoso", Metric::Secure).await.unwrap());
    let first = datetime!(2026-08-31 3:00 UTC);
    let snapshots: Vec<_> = (0..90)
        .map(|day| DailySnapshot {
            at: first + time::Duration::days(day),
            score: 40.0 + day as f64 / 10.0,
            max_score: Some(80.0),
        })
        .collect();
    assert_eq!(
        store
            .insert_daily("contoso", Metric::Secure, &snapshots)
            .await
            .unwrap(),
        90
    );
    // A second back-fill changes nothing.
    assert_eq!(
        store
            .insert_daily("contoso", Metric::Secure, &snapshots)
            .await
            .unwrap(),
        0
    );
    assert!(store.has_points("contoso", Metric::Secure).await.unwrap());
    let points = store
        .history(
            "contoso",
            Metric::Secure,
            datetime!(2026-08-01 0:00 UTC),
            datetime!(2026-12-01 0:00 UTC),
            Interval::Day,
        )
        .await
        .unwrap();
    assert_eq!(points.len(), 90);
    assert_eq!(points[0].at, datetime!(2026-08-31 0:00 UTC));
    assert_eq!(points[89].at, datetime!(2026-11-28 0:00 UTC));
    assert!(points
        .iter()
        .all(|p| p.max_score == Some(80.0) && p.samples == 1));
    assert_eq!(points[89].score, 48.9);
}

async fn check_roll_up_and_retention(store: &Store) {
    let day = datetime!(2026-01-10 0:00 UTC);
    store
        .write(&[
            reading("contoso", day + time::Duration::hours(0), 300.0),
            reading("contoso", day + time::Duration::hours(5), 280.0),
            reading("contoso", day + time::Duration::hours(23), 305.0),
            reading("contoso", day + time::Duration::hours(26), 310.0),
        ])
        .await
        .unwrap();
    let range = (day, day + time::Duration::days(3));
    let hourly = |store: &Store| {
        let store = store.clone();
        async move {
            store
                .history("contoso", Metric::Device, range.0, range.1, Interval::Hour)
                .await
                .unwrap()
        }
    };
    // Ten days later nothing is old enough.
    assert_eq!(
        store.roll_up(day + time::Duration::days(10)).await.unwrap(),
        0
    );
    assert_eq!(hourly(store).await.len(), 4);
    // 31 days after the 10th, the 10th is rolled up to one point; the 11th (30 days) is not.
    assert_eq!(
        store.roll_up(day + time::Duration::days(31)).await.unwrap(),
        3
    );
    let points = hourly(store).await;
    let summary: Vec<_> = points
        .iter()
        .map(|p| (p.at, p.score, p.min, p.max, p.samples))
        .collect();
    assert_eq!(
        summary,
        vec![
            (day, 305.0, 280.0, 305.0, 3),
            (day + time::Duration::hours(26), 310.0, 310.0, 310.0, 1),
        ]
    );
    // Rolling up again changes nothing; a late reading of the rolled day merges into it.
    assert_eq!(
        store.roll_up(day + time::Duration::days(31)).await.unwrap(),
        0
    );
    // Retention of 400 days, 401 days after the 10th: the 10th goes, the 11th stays.
    let deleted = store
        .enforce_retention(day + time::Duration::days(401), 400)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let points = hourly(store).await;
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].at, day + time::Duration::hours(26));
}

async fn check_changes(store: &Store) {
    let now = datetime!(2026-11-29 10:00 UTC);
    store
        .write(&[
            reading("contoso", datetime!(2026-10-30 12:00 UTC), 250.0),
            reading("contoso", datetime!(2026-11-22 08:00 UTC), 280.0),
            reading("contoso", datetime!(2026-11-28 05:00 UTC), 290.0),
            reading("contoso", datetime!(2026-11-28 23:30 UTC), 300.0),
            // Today: not the end of any past day.
            reading("contoso", datetime!(2026-11-29 09:00 UTC), 310.0),
        ])
        .await
        .unwrap();
    let tenants = vec!["contoso".to_owned(), "fabrikam".to_owned()];
    let changes = store.changes(&tenants, Metric::Device, now).await.unwrap();
    let contoso = changes["contoso"];
    assert_eq!(contoso.ago_1d, Some(300.0));
    assert_eq!(contoso.ago_7d, Some(280.0));
    assert_eq!(contoso.ago_30d, Some(250.0));
    assert_eq!(contoso.ago_90d, None);
    // change_7d = score now − the score at the end of the day 7 days ago.
    assert_eq!(310.0 - contoso.ago_7d.unwrap(), 30.0);
    assert_eq!(changes["fabrikam"], Default::default());
    // Many tenants are answered in a few statements, each tenant exactly once.
    let many: Vec<String> = (0..4_500).map(|i| format!("t{i}")).collect();
    let changes = store.changes(&many, Metric::Device, now).await.unwrap();
    assert_eq!(changes.len(), 4_500);
}

async fn check_portfolio(store: &Store) {
    store
        .write(&[
            reading("a", datetime!(2026-11-27 10:00 UTC), 100.0),
            reading("a", datetime!(2026-11-27 20:00 UTC), 110.0),
            reading("b", datetime!(2026-11-27 12:00 UTC), 200.0),
            reading("c", datetime!(2026-11-27 12:00 UTC), 1000.0),
            reading("a", datetime!(2026-11-28 12:00 UTC), 120.0),
        ])
        .await
        .unwrap();
    let visible: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
    let points = store
        .portfolio(
            &visible,
            Metric::Device,
            datetime!(2026-11-27 0:00 UTC),
            datetime!(2026-11-29 0:00 UTC),
            Interval::Day,
        )
        .await
        .unwrap();
    let summary: Vec<_> = points
        .iter()
        .map(|p| (p.at, p.tenants, p.mean, p.median, p.min, p.max))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                datetime!(2026-11-27 0:00 UTC),
                2,
                155.0,
                155.0,
                110.0,
                200.0
            ),
            (
                datetime!(2026-11-28 0:00 UTC),
                1,
                120.0,
                120.0,
                120.0,
                120.0
            ),
        ]
    );
}

fn config(url: String, buffer: usize) -> HistoryConfig {
    HistoryConfig {
        enabled: true,
        url: SecretString::from(url),
        retention_days: 400,
        alerts_retention_days: 400,
        buffer,
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

/// The store of a running gateway, once connected.
async fn store_of(app: &TestApp) -> Store {
    let history = app.services.history().expect("history is on");
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("the history database opens");
    history.store().unwrap().clone()
}

/// Readings of the last three days for contoso (gold) and fabrikam, straight into the store.
async fn seed(store: &Store) -> OffsetDateTime {
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let mut readings = Vec::new();
    for (tenant, base) in [("contoso", 300.0), ("fabrikam", 100.0)] {
        for day in 1..=3 {
            let at = today - time::Duration::days(day) + time::Duration::hours(12);
            readings.push(reading(tenant, at, base + day as f64));
        }
    }
    store.write(&readings).await.unwrap();
    today
}

async fn get(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tenant_history_answers_json_and_csv_within_the_callers_scope() {
    let (contoso_key, contoso_digest) = generate_key().unwrap();
    let (all_key, all_digest) = generate_key().unwrap();
    let keys = format!(
        "[[api_keys]]\nname = \"contoso-portal\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"all\"\nsha256 = \"{all_digest}\"\ntenants = [\"*\"]\n"
    );
    let app = spawn_app_with_config(
        emulator_options(6, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true")],
        &keys,
    )
    .await;
    let today = seed(&store_of(&app).await).await;

    let response = get(&app, "/tenants/contoso/history", &contoso_key).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tenant"], "contoso");
    assert_eq!(body["metric"], "device");
    assert_eq!(body["interval"], "day");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let stamp = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        points[2],
        serde_json::json!({"at": stamp(today - time::Duration::days(1)), "score": 301.0,
                           "min": 301.0, "max": 301.0, "samples": 1})
    );

    // CSV by parameter and by Accept.
    let response = get(
        &app,
        "/tenants/contoso/history?format=csv&interval=week",
        &contoso_key,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("at,score,min,max,samples,max_score\r\n"),
        "{text}"
    );
    let response = app
        .client
        .get(format!("{}/tenants/contoso/history", app.address))
        .bearer_auth(&contoso_key)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");

    // Outside the key's scope is unknown, exactly as a tenant that does not exist.
    for path in ["/tenants/fabrikam/history", "/tenants/nope/history"] {
        let response = get(&app, path, &contoso_key).await;
        assert_eq!(response.status().as_u16(), 404);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unknown_tenant");
    }
    let response = get(&app, "/tenants/fabrikam/history", &all_key).await;
    assert_eq!(response.status().as_u16(), 200);

    // The portfolio: the contoso key sees contoso only; the other key both.
    let (_, body) = json(get(&app, "/scores/history", &contoso_key).await).await;
    assert!(body["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["tenants"] == 1 && p["max"].as_f64().unwrap() > 300.0));
    let (status, body) = json(get(&app, "/scores/history", &all_key).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["metric"], "device");
    let last = body["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        serde_json::json!({"at": stamp(today - time::Duration::days(1)), "tenants": 2,
                           "mean": 201.0, "median": 201.0, "min": 101.0, "max": 301.0})
    );
    let (_, body) = json(get(&app, "/scores/history?tenant=fabrikam", &all_key).await).await;
    assert!(body["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["tenants"] == 1 && p["max"].as_f64().unwrap() < 200.0));
    let response = get(&app, "/scores/history?format=csv", &all_key).await;
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("at,tenants,mean,median,min,max\r\n"),
        "{text}"
    );
}

async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn every_bad_history_query_is_a_400_naming_its_parameter() {
    let app = spawn_app_with(emulator_options(1, vec![]), &[]).await;
    let tenant = app.emulator.tenants()[0].slug.clone();
    let cases = [
        ("metric=score", "metric:"),
        ("interval=month", "interval:"),
        ("from=yesterday", "from:"),
        ("to=2026-11-29", "to:"),
        (
            "from=2026-11-20T00:00:00Z&to=2026-11-10T00:00:00Z",
            "from: after to",
        ),
        (
            "from=2001-01-01T00:00:00Z",
            "from: older than the retention",
        ),
        ("to=2001-01-01T00:00:00Z", "to: older than the retention"),
        ("format=xml", "format:"),
        ("unknown=1", "unknown"),
    ];
    for route in [
        format!("/tenants/{tenant}/history"),
        "/scores/history".to_owned(),
    ] {
        for (query, expected) in cases {
            let (status, _, body) = app.get_json(&format!("{route}?{query}")).await;
            assert_eq!(status, 400, "{route}?{query}: {body}");
            assert_eq!(body["code"], "invalid_request");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains(expected), "{route}?{query}: {detail}");
        }
    }
}

#[tokio::test]
async fn history_turned_off_answers_history_disabled() {
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__HISTORY__ENABLED", "false")],
    )
    .await;
    assert!(app.services.history().is_none());
    let tenant = app.emulator.tenants()[0].slug.clone();
    for path in [
        format!("/tenants/{tenant}/history"),
        "/scores/history".to_owned(),
    ] {
        let (status, _, body) = app.get_json(&path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "history_disabled");
    }
}
