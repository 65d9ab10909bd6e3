//! The history's read path under pressure: the portfolio's cost follows the caller's tenants,
//! ranges are bounded per interval, reads have their own permits and a deadline and fail fast
//! while the database is away; the CSV operations of their own; `change_90d` on the day of a
//! back-fill.

use crate::helpers::{emulator_options, spawn_app_with, TestApp};
use crate::postgres::{self, PgServer};
use scoregate::config::HistoryConfig;
use scoregate::history::{History, HistoryError, Interval, Metric, ReadLimits, Reading, Store};
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

/// A history on `url`, connected, with `limits` for its reads.
async fn history_on(url: String, limits: ReadLimits) -> History {
    let history = History::start(
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
    )
    .with_read_limits(limits);
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("the history database opens");
    history
}

/// Points for `tenants` of two days, each tenant `index` scoring `100 + index`.
async fn seed(store: &Store, tenants: usize) {
    let mut readings = Vec::new();
    for index in 0..tenants {
        for at in [
            datetime!(2026-11-27 12:00 UTC),
            datetime!(2026-11-28 12:00 UTC),
        ] {
            readings.push(reading(&format!("t{index:03}"), at, 100.0 + index as f64));
        }
    }
    store.write(&readings).await.unwrap();
}

async fn check_scoped_portfolio(store: &Store) {
    seed(store, 300).await;
    // A caller who sees 2 of 300 tenants: the statistics are theirs alone.
    let visible: HashSet<String> = ["t007".to_owned(), "t250".to_owned()].into();
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
        .map(|p| (p.at, p.tenants, p.mean, p.min, p.max))
        .collect();
    assert_eq!(
        summary,
        vec![
            (datetime!(2026-11-27 0:00 UTC), 2, 228.5, 107.0, 350.0),
            (datetime!(2026-11-28 0:00 UTC), 2, 228.5, 107.0, 350.0),
        ]
    );
    // Hourly buckets in order, the same tenants.
    let hourly = store
        .portfolio(
            &visible,
            Metric::Device,
            datetime!(2026-11-27 0:00 UTC),
            datetime!(2026-11-29 0:00 UTC),
            Interval::Hour,
        )
        .await
        .unwrap();
    assert_eq!(hourly.len(), 2);
    assert!(hourly.iter().all(|p| p.tenants == 2));
    // Nobody visible: nothing, without a query over everyone.
    let nobody = store
        .portfolio(
            &HashSet::new(),
            Metric::Device,
            datetime!(2026-11-27 0:00 UTC),
            datetime!(2026-11-29 0:00 UTC),
            Interval::Day,
        )
        .await
        .unwrap();
    assert!(nobody.is_empty());
}

mod a_scoped_portfolio_sees_its_tenants_only {
    #[tokio::test]
    async fn on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
        let store = scoregate::history::Store::connect(&url).await.unwrap();
        super::check_scoped_portfolio(&store).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let url = crate::postgres::shared().database().await;
        let store = scoregate::history::Store::connect(&url).await.unwrap();
        super::check_scoped_portfolio(&store).await;
    }
}

/// Holds an exclusive lock on `history_points` (every read of it waits) until dropped.
async fn lock_history(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
    sqlx::query("LOCK TABLE history_points IN ACCESS EXCLUSIVE MODE")
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

/// Waits until PostgreSQL shows a query waiting for the lock.
async fn await_lock_waiter(url: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let started = Instant::now();
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%history_points%'",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no read waits for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn reads_beyond_their_permits_are_refused_and_a_slow_read_meets_its_deadline() {
    let url = postgres::shared().database().await;
    // One permit, a long deadline: the first read holds the permit while the table is locked.
    let history = std::sync::Arc::new(
        history_on(
            url.clone(),
            ReadLimits {
                permits: 1,
                queue: Duration::from_millis(50),
                deadline: Duration::from_secs(60),
                ..ReadLimits::default()
            },
        )
        .await,
    );
    let from = datetime!(2026-11-27 0:00 UTC);
    let to = datetime!(2026-11-29 0:00 UTC);
    let lock = lock_history(&url).await;
    let first = tokio::spawn({
        let history = history.clone();
        async move {
            history
                .tenant_points("t001", Metric::Device, from, to, Interval::Day)
                .await
        }
    });
    // The first read has its permit (and waits for the lock, which it cannot pass).
    let started = Instant::now();
    while history.reads().attempts() < 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "no first read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = history
        .tenant_points("t002", Metric::Device, from, to, Interval::Day)
        .await;
    assert!(matches!(refused, Err(HistoryError::Busy)), "{refused:?}");
    assert_eq!(history.reads().attempts(), 1, "the refused read never ran");
    drop(lock);
    assert!(
        first.await.unwrap().is_ok(),
        "the held read ends once unlocked"
    );

    // A short deadline: the read is given up while the lock holds, and the permit comes back.
    let history = history_on(
        url.clone(),
        ReadLimits {
            deadline: Duration::from_millis(200),
            ..ReadLimits::default()
        },
    )
    .await;
    let lock = lock_history(&url).await;
    let one: HashSet<String> = ["t001".to_owned()].into();
    let late_read = history.portfolio(&one, Metric::Device, from, to, Interval::Day);
    let (late, ()) = tokio::join!(late_read, await_lock_waiter(&url));
    assert!(
        matches!(late, Err(HistoryError::Deadline { after }) if after == Duration::from_millis(200)),
        "{late:?}"
    );
    drop(lock);
    assert!(history
        .tenant_points("t001", Metric::Device, from, to, Interval::Day)
        .await
        .is_ok());
}

#[tokio::test]
async fn with_the_database_away_history_and_alerts_answer_503_at_once_with_retry_after() {
    let server = PgServer::start();
    let database = server.database().await;
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__HISTORY__URL", database.as_str())],
    )
    .await;
    let history = app.services.history().unwrap().clone();
    let (status, _, _) = app.get_json("/scores/history").await;
    assert_eq!(status, 200);
    let before = history.reads().attempts();
    server.stop();
    // The first read meets the outage (after the pool's acquire timeout) ...
    let (status, headers, body) = app.get_json("/scores/history").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "history_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(history.reads().attempts(), before + 1);
    // ... the next ones are answered without going to the database.
    let tenant = app.emulator.tenants()[0].slug.clone();
    for path in [
        "/scores/history".to_owned(),
        format!("/tenants/{tenant}/history"),
        "/alerts".to_owned(),
    ] {
        let (status, headers, body) = app.get_json(&path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["code"], "history_unavailable");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=5).contains(&retry_after), "{path}: {retry_after}");
    }
    assert_eq!(
        history.reads().attempts(),
        before + 1,
        "no read went to the database while it was known to be away"
    );
    // Back: once the window has passed, a request probes and the routes answer again.
    server.start_again();
    let started = Instant::now();
    loop {
        let (status, _, body) = app.get_json("/scores/history").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the history did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = app.get_json("/alerts").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_corrupt_alert_row_fails_its_own_request_not_the_history() {
    let app = spawn_app_with(emulator_options(1, vec![]), &[]).await;
    let history = app.services.history().unwrap().clone();
    let tenant = app.emulator.tenants()[0].slug.clone();
    let (status, _, body) = app.get_json("/alerts/events").await;
    assert_eq!(status, 200, "{body}");
    // A row this version cannot read: an event type it does not know.
    sqlx::query(
        "INSERT INTO alert_events (id, type, alert, tenant, metric, value, threshold, since, at, body) \
         VALUES ('evt_from_the_future', 'alert.snoozed', 'low', 'contoso', 'device', 1.0, 2.0, 0, 0, '{}')",
    )
    .execute(history.store().unwrap().pool())
    .await
    .unwrap();
    let before = history.reads().attempts();
    let (status, _, body) = app.get_json("/alerts/events").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "history_unavailable");
    // The database answered: the history's reads still go to it, at once.
    for path in [
        "/scores/history".to_owned(),
        format!("/tenants/{tenant}/history"),
        "/alerts".to_owned(),
    ] {
        let (status, _, body) = app.get_json(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(history.reads().attempts(), before + 2);
}

async fn status_and_code(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = app.get_json(path).await;
    (status, body["code"].clone())
}

#[tokio::test]
async fn ranges_longer_than_their_interval_allows_are_400() {
    let app = spawn_app_with(emulator_options(1, vec![]), &[]).await;
    let tenant = app.emulator.tenants()[0].slug.clone();
    let stamp = |days: i64| {
        (OffsetDateTime::now_utc() - time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for route in [
        format!("/tenants/{tenant}/history"),
        "/scores/history".to_owned(),
        "/scores/history.csv".to_owned(),
    ] {
        let path = format!("{route}?interval=hour&from={}", stamp(40));
        let (status, _, body) = app.get_json(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "invalid_request");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("from: interval=hour covers at most 31 days"),
            "{body}"
        );
        // Within the bound, and the defaults (shortened to the bound), are answered.
        for query in [
            format!("interval=hour&from={}", stamp(30)),
            "interval=hour".to_owned(),
            format!("interval=day&from={}", stamp(300)),
        ] {
            let path = format!("{route}?{query}");
            let response = app.get(&path).await;
            assert_eq!(response.status().as_u16(), 200, "{path}");
        }
    }
}

#[tokio::test]
async fn history_csv_has_operations_of_its_own_and_json_routes_still_negotiate() {
    let app = spawn_app_with(emulator_options(1, vec![]), &[]).await;
    let tenant = app.emulator.tenants()[0].slug.clone();
    for (path, header) in [
        (
            format!("/tenants/{tenant}/history.csv"),
            "at,score,min,max,samples,max_score",
        ),
        (
            "/scores/history.csv".to_owned(),
            "at,tenants,mean,median,min,max",
        ),
        (
            format!("/tenants/{tenant}/history?format=csv"),
            "at,score,min,max,samples,max_score",
        ),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let text = response.text().await.unwrap();
        assert!(text.starts_with(&format!("{header}\r\n")), "{path}: {text}");
    }
    let (status, code) = status_and_code(&app, "/scores/history.csv?format=json").await;
    assert_eq!((status, code.as_str()), (400, Some("invalid_request")));

    // The document: one representation per operation, and times as date-time.
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    for (path, media) in [
        ("/tenants/{id}/history", "application/json"),
        ("/scores/history", "application/json"),
        ("/tenants/{id}/history.csv", "text/csv"),
        ("/scores/history.csv", "text/csv"),
    ] {
        let operation = &document["paths"][path]["get"];
        let content = operation["responses"]["200"]["content"]
            .as_object()
            .unwrap();
        assert_eq!(
            content.keys().collect::<Vec<_>>(),
            [media],
            "{path}: {content:?}"
        );
        let parameters = operation["parameters"].as_array().unwrap();
        for name in ["from", "to"] {
            let parameter = parameters.iter().find(|p| p["name"] == name).unwrap();
            assert_eq!(parameter["schema"]["format"], "date-time", "{path} {name}");
        }
        let has_format = parameters.iter().any(|p| p["name"] == "format");
        assert_eq!(has_format, !path.ends_with(".csv"), "{path}");
    }
}

#[tokio::test]
async fn change_90d_is_known_on_the_day_of_the_back_fill() {
    let app = spawn_app_with(
        emulator_options(1, vec![]),
        &[("SCOREGATE__UPSTREAM__METRICS", r#"["device","secure"]"#)],
    )
    .await;
    let tenant = app.emulator.tenants()[0].slug.clone();
    let (status, _, body) = app
        .get_json(&format!("/tenants/{tenant}/score?metric=secure"))
        .await;
    assert_eq!(status, 200, "{body}");
    let history = app.services.history().unwrap();
    let store = history.store().unwrap().clone();
    let now = OffsetDateTime::now_utc();
    let started = Instant::now();
    let points = loop {
        let points = store
            .history(
                &tenant,
                Metric::Secure,
                now - time::Duration::days(100),
                now + time::Duration::hours(1),
                Interval::Day,
            )
            .await
            .unwrap();
        if points.len() >= 90 {
            break points;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no back-fill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The back-fill is all there is: its oldest snapshot is the score 90 days ago.
    let oldest = points[0].score;
    let (status, _, body) = app.get_json("/scores?metric=secure").await;
    assert_eq!(status, 200, "{body}");
    let item = &body["items"][0];
    let score = item["score"].as_f64().unwrap();
    let change = item["change_90d"].as_f64().expect("change_90d is known");
    assert!(
        (change - (score - oldest)).abs() < 1e-6,
        "{item}: {score} - {oldest}"
    );
}
