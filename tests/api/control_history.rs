//! The per-control history's store on SQLite and on a real PostgreSQL: a row only when a
//! control's values change, control ids stored once, the 90-day back-fill idempotent (also
//! after a live reading), ranges, retention, and the writer's non-blocking path.

use crate::postgres;
use scoregate::config::HistoryConfig;
use scoregate::controls::State;
use scoregate::history::{ControlPoint, ControlReading, History, Store};
use scoregate::metrics::HistoryMetrics;
use scoregate::model::TenantId;
use sqlx::Row;
use std::time::Duration;
use time::macros::datetime;
use time::OffsetDateTime;

pub(crate) fn point(control: &str, score: f64, state: State) -> ControlPoint {
    ControlPoint {
        control: control.to_owned(),
        score,
        max_score: Some(10.0),
        state,
        category: None,
    }
}

fn reading(tenant: &str, at: OffsetDateTime, points: Vec<ControlPoint>) -> ControlReading {
    ControlReading {
        tenant: tenant.to_owned(),
        at,
        points,
    }
}

async fn sqlite() -> (Store, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
    (Store::connect(&url).await.unwrap(), Some(dir))
}

async fn postgres() -> (Store, Option<tempfile::TempDir>) {
    let url = postgres::shared().database().await;
    (Store::connect(&url).await.unwrap(), None)
}

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

on_both_engines!(a_row_is_written_only_when_a_control_changes, check_changes);
on_both_engines!(the_backfill_of_ninety_days_is_idempotent, check_backfill);

async fn count(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

/// (at, score, state) of each change.
async fn changes(
    store: &Store,
    tenant: &str,
    control: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Option<Vec<(OffsetDateTime, f64, State)>> {
    store
        .control_history(tenant, control, from, to)
        .await
        .unwrap()
        .map(|points| {
            points
                .into_iter()
                .map(|p| (p.at, p.score, p.state))
                .collect()
        })
}

async fn check_changes(store: &Store) {
    let t0 = datetime!(2026-06-01 09:00 UTC);
    let hour = time::Duration::hours(1);
    let (t1, t2, t3) = (t0 + hour, t0 + 2 * hour, t0 + 3 * hour);
    let first = vec![
        point("MFARegistrationV2", 5.0, State::Default),
        point("scid_2010", 10.0, State::Default),
    ];
    assert_eq!(
        store
            .write_controls(&[reading("a", t0, first.clone())])
            .await
            .unwrap(),
        2
    );
    // The same values an hour later: nothing.
    assert_eq!(
        store
            .write_controls(&[reading("a", t1, first.clone())])
            .await
            .unwrap(),
        0
    );
    // A score changes, then a state: one row each.
    let mut second = first.clone();
    second[0].score = 7.0;
    let mut third = second.clone();
    third[1].state = State::Ignored;
    let written = store
        .write_controls(&[reading("a", t2, second), reading("a", t3, third)])
        .await
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(store.control_rows().await.unwrap(), 4);
    // Another tenant with the same controls: the ids are stored once.
    store
        .write_controls(&[reading("b", t0, first)])
        .await
        .unwrap();
    assert_eq!(count(store, "history_controls").await, 2);
    assert_eq!(store.control_rows().await.unwrap(), 6);

    let day = time::Duration::days(1);
    assert_eq!(
        changes(store, "a", "MFARegistrationV2", t0 - day, t3).await,
        Some(vec![(t0, 5.0, State::Default), (t2, 7.0, State::Default)])
    );
    assert_eq!(
        changes(store, "a", "scid_2010", t0, t3).await,
        Some(vec![(t0, 10.0, State::Default), (t3, 10.0, State::Ignored)])
    );
    // The change in force at `from` comes first, even when older.
    assert_eq!(
        changes(store, "a", "MFARegistrationV2", t2 + hour, t2 + day).await,
        Some(vec![(t2, 7.0, State::Default)])
    );
    // A range before the first change: known control, no point.
    assert_eq!(
        changes(store, "a", "MFARegistrationV2", t0 - 2 * day, t0 - day).await,
        Some(vec![])
    );
    // No history of the control in this tenant, or no such control at all.
    store
        .write_controls(&[reading(
            "c",
            t0,
            vec![point("OnlyInC", 1.0, State::Default)],
        )])
        .await
        .unwrap();
    assert_eq!(changes(store, "a", "OnlyInC", t0, t3).await, None);
    assert_eq!(changes(store, "a", "Nothing", t0, t3).await, None);
    assert_eq!(changes(store, "a", "../etc", t0, t3).await, None);
}

/// 90 days of two controls: `MFARegistrationV2` 0 until day 30, 5 until day 60, then 10;
/// `scid_2010` always 10.
fn ninety_days(today: OffsetDateTime) -> Vec<(OffsetDateTime, Vec<ControlPoint>)> {
    (0..90)
        .map(|day| {
            let score = match day {
                0..30 => 0.0,
                30..60 => 5.0,
                _ => 10.0,
            };
            let at = today - time::Duration::days(90 - day);
            (
                at,
                vec![
                    point("MFARegistrationV2", score, State::Default),
                    point("scid_2010", 10.0, State::Default),
                ],
            )
        })
        .collect()
}

async fn check_backfill(store: &Store) {
    let today = datetime!(2026-06-01 00:00 UTC);
    let days = ninety_days(today);
    assert_eq!(store.insert_control_days("a", &days).await.unwrap(), 4);
    assert_eq!(store.insert_control_days("a", &days).await.unwrap(), 0);
    assert_eq!(store.control_rows().await.unwrap(), 4);
    let changed = changes(
        store,
        "a",
        "MFARegistrationV2",
        today - time::Duration::days(90),
        today,
    )
    .await
    .unwrap();
    let scores: Vec<f64> = changed.iter().map(|(_, score, _)| *score).collect();
    assert_eq!(scores, [0.0, 5.0, 10.0]);
    assert_eq!(changed[1].0, today - time::Duration::days(60));
    // A live reading with the same values as the last day adds nothing.
    let live = reading("a", today + time::Duration::hours(9), days[89].1.clone());
    assert_eq!(store.write_controls(&[live]).await.unwrap(), 0);

    // The first live reading may be written before the back-fill: it is then no change, and
    // the back-fill's earlier row replaces it.
    let live = reading("b", today + time::Duration::hours(9), days[89].1.clone());
    assert_eq!(store.write_controls(&[live]).await.unwrap(), 2);
    store.insert_control_days("b", &days).await.unwrap();
    let changed = changes(
        store,
        "b",
        "scid_2010",
        today - time::Duration::days(90),
        today + time::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(
        changed,
        [(today - time::Duration::days(90), 10.0, State::Default)]
    );
    assert_eq!(store.insert_control_days("b", &days).await.unwrap(), 0);
    assert_eq!(store.control_rows().await.unwrap(), 8);

    // Retention as for day points: rows of days past it are deleted (per tenant the rows of
    // 90 and 60 days ago), whatever was in force then.
    let deleted = store.enforce_retention(today, 45).await.unwrap();
    assert_eq!(deleted, 6);
    assert_eq!(store.control_rows().await.unwrap(), 2);
}

#[tokio::test]
async fn recorded_controls_reach_the_store_without_waiting_and_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let history = History::start(
        &HistoryConfig {
            enabled: true,
            url: secrecy::SecretString::from(format!(
                "sqlite://{}/history.db?mode=rwc",
                dir.path().display()
            )),
            retention_days: 400,
            alerts_retention_days: 400,
            buffer: 10,
            controls: false,
        },
        HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
    );
    let tenant = TenantId::parse("contoso").unwrap();
    let at = datetime!(2026-06-01 09:00 UTC);
    let points = vec![
        point("MFARegistrationV2", 5.0, State::Default),
        point("scid_2010", f64::NAN, State::Default),
    ];
    for hour in 0..3 {
        history.record_controls(&tenant, at + time::Duration::hours(hour), points.clone());
    }
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("written");
    let store = history.store().unwrap();
    // One row: the score that is not a number is left out, the repeats are no change.
    assert_eq!(store.control_rows().await.unwrap(), 1);
    assert_eq!(history.stats().written, 3);
    let found = history
        .control_history(
            "contoso",
            "MFARegistrationV2",
            at,
            at + time::Duration::days(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].max_score, Some(10.0));
}
