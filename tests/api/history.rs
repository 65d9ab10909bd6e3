//! The score history: the store on SQLite and on a real PostgreSQL (hourly deduplication,
//! back-fill, roll-up and retention with a moved clock, `changes`, the portfolio). The writer is
//! tested in `history_writer`, the two routes in `history_routes`.

use crate::postgres::{self};
use scoregate::history::{DailySnapshot, Interval, Metric, Reading, Store};
use scoregate::model::TenantId;
use std::collections::HashSet;
use time::macros::datetime;
use time::OffsetDateTime;

pub(crate) fn reading(tenant: &str, at: OffsetDateTime, score: f64) -> Reading {
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
