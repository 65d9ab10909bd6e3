//! The SQL of the per-control history: rows only on change, control ids stored once.
//!
//! Writing merges the new values with the rows around them in memory, then stores the
//! difference: a value equal to the one in force is not stored, and a stored row made
//! redundant by an earlier one written later (a back-fill after the first live reading) is
//! deleted. Both the live path and the back-fill go through [`Store::merge_controls`], so
//! running either twice adds nothing.

use super::Store;
use crate::controls::State;
use crate::history::controls::{valid_control_id, ControlChange, ControlPoint};
use crate::history::HistoryError;
use sqlx::{Any, Row, Transaction};
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// What a row holds besides its keys: equal values are not stored twice in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Values {
    score: f64,
    max_score: Option<f64>,
    state: State,
}

impl Values {
    fn of(point: &ControlPoint) -> Self {
        Self {
            score: point.score,
            max_score: point.max_score,
            state: point.state,
        }
    }
}

/// One control's rows in memory: its values by time, and whether each is stored as is.
type Series = BTreeMap<i64, (Values, Stored)>;

/// Whether a row of a [`Series`] is in the database, and with which values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    /// Not stored.
    No,
    /// Stored with these values.
    As(Values),
}

/// A tenant's controls read at one time, queued by [`crate::history::History::record_controls`].
#[derive(Debug, Clone, PartialEq)]
pub struct ControlReading {
    /// The gateway's tenant id.
    pub tenant: String,
    /// When they were read.
    pub at: OffsetDateTime,
    /// The controls.
    pub points: Vec<ControlPoint>,
}

fn state_of(text: &str) -> Result<State, sqlx::Error> {
    State::parse(text).ok_or_else(|| sqlx::Error::Decode(format!("unknown state {text:?}").into()))
}

impl Store {
    /// A transaction that holds the database's write lock from its start. Per-control writes
    /// read the rows in force before they write; on SQLite a deferred transaction that reads
    /// first and then writes fails at once with "database is locked" (SQLITE_BUSY, no busy
    /// wait) when another connection wrote meanwhile, as the writer and a back-fill do.
    /// `BEGIN IMMEDIATE` takes the lock first, waiting for it like any write. PostgreSQL's rows
    /// are locked per statement; its plain `BEGIN` is right.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, HistoryError> {
        Ok(if self.postgres {
            self.pool.begin().await?
        } else {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        })
    }

    /// Writes live readings in one transaction: a row per control whose values changed.
    pub async fn write_controls(&self, readings: &[ControlReading]) -> Result<u64, HistoryError> {
        let mut transaction = self.begin_write().await?;
        let mut ids = self.control_ids.read().clone();
        let mut inserted = 0;
        for reading in readings {
            let day = [(reading.at, reading.points.clone())];
            inserted += merge_controls(&mut transaction, &mut ids, &reading.tenant, &day).await?;
        }
        transaction.commit().await?;
        // Only once committed: an id rolled back must not be taken for stored.
        self.control_ids.write().extend(ids);
        Ok(inserted)
    }

    /// Back-fills a tenant's controls of past days (Graph's daily snapshots joined with the
    /// tenant's profiles): a row per control whose values changed from the day before. Running
    /// it again adds nothing. Returns the rows inserted.
    pub async fn insert_control_days(
        &self,
        tenant: &str,
        days: &[(OffsetDateTime, Vec<ControlPoint>)],
    ) -> Result<u64, HistoryError> {
        let mut transaction = self.begin_write().await?;
        let mut ids = self.control_ids.read().clone();
        let inserted = merge_controls(&mut transaction, &mut ids, tenant, days).await?;
        transaction.commit().await?;
        self.control_ids.write().extend(ids);
        Ok(inserted)
    }

    /// The changes of `control` in `tenant` from `from` to `to` (both included), oldest first;
    /// the change in force at `from` comes first even when older. `None` when the tenant has
    /// no history of the control at all.
    pub async fn control_history(
        &self,
        tenant: &str,
        control: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Option<Vec<ControlChange>>, HistoryError> {
        if !valid_control_id(control) {
            return Ok(None);
        }
        let Some(id) = sqlx::query("SELECT id FROM history_controls WHERE control = $1")
            .bind(control)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = id.try_get("id")?;
        let any = sqlx::query(
            "SELECT at FROM history_control_points WHERE tenant = $1 AND control = $2 LIMIT 1",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if any.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT at, score, max_score, state FROM history_control_points \
             WHERE tenant = $1 AND control = $2 AND at <= $4 AND at >= COALESCE(\
                (SELECT MAX(at) FROM history_control_points \
                 WHERE tenant = $1 AND control = $2 AND at <= $3), $3) \
             ORDER BY at",
        )
        .bind(tenant)
        .bind(id)
        .bind(from.unix_timestamp())
        .bind(to.unix_timestamp())
        .fetch_all(&self.pool)
        .await?;
        let changes = rows
            .iter()
            .map(|row| {
                let at: i64 = row.try_get("at")?;
                let state: String = row.try_get("state")?;
                Ok(ControlChange {
                    at: OffsetDateTime::from_unix_timestamp(at)
                        .map_err(|error| sqlx::Error::Decode(error.into()))?,
                    score: row.try_get("score")?,
                    max_score: row.try_get("max_score")?,
                    state: state_of(&state)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(changes))
    }

    /// How many per-control rows the database holds (tests and the benchmark).
    pub async fn control_rows(&self) -> Result<i64, HistoryError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM history_control_points")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

/// Adds the numbers of `controls` to `ids` (those known already, and the others, stored
/// first when new).
async fn control_ids(
    transaction: &mut Transaction<'static, Any>,
    ids: &mut HashMap<String, i64>,
    controls: impl Iterator<Item = &str>,
) -> Result<(), sqlx::Error> {
    for control in controls {
        if ids.contains_key(control) {
            continue;
        }
        sqlx::query(
            "INSERT INTO history_controls (control) VALUES ($1) ON CONFLICT (control) DO NOTHING",
        )
        .bind(control)
        .execute(&mut **transaction)
        .await?;
        let row = sqlx::query("SELECT id FROM history_controls WHERE control = $1")
            .bind(control)
            .fetch_one(&mut **transaction)
            .await?;
        ids.insert(control.to_owned(), row.try_get("id")?);
    }
    Ok(())
}

/// Merges `days` (each a time and the controls read then) into `tenant`'s rows: reads the rows
/// from the one in force before the earliest day on, adds the new values, keeps only changes,
/// and writes the difference. Returns the rows inserted.
async fn merge_controls(
    transaction: &mut Transaction<'static, Any>,
    ids: &mut HashMap<String, i64>,
    tenant: &str,
    days: &[(OffsetDateTime, Vec<ControlPoint>)],
) -> Result<u64, HistoryError> {
    let storable = |point: &&ControlPoint| point.is_storable();
    let Some(earliest) = days
        .iter()
        .filter(|(_, points)| points.iter().any(|p| p.is_storable()))
        .map(|(at, _)| at.unix_timestamp())
        .min()
    else {
        return Ok(0);
    };
    control_ids(
        transaction,
        ids,
        days.iter()
            .flat_map(|(_, points)| points.iter().filter(storable))
            .map(|point| point.control.as_str()),
    )
    .await?;
    // The row in force before the earliest day, per control, and every row from it on.
    let rows = sqlx::query(
        "SELECT control, at, score, max_score, state FROM history_control_points p \
         WHERE tenant = $1 AND (at >= $2 OR at = (SELECT MAX(q.at) FROM history_control_points q \
             WHERE q.tenant = p.tenant AND q.control = p.control AND q.at < $2))",
    )
    .bind(tenant)
    .bind(earliest)
    .fetch_all(&mut **transaction)
    .await?;
    let mut series: HashMap<i64, Series> = HashMap::new();
    for row in &rows {
        let state: String = row.try_get("state")?;
        let values = Values {
            score: row.try_get("score")?,
            max_score: row.try_get("max_score")?,
            state: state_of(&state)?,
        };
        series
            .entry(row.try_get("control")?)
            .or_default()
            .insert(row.try_get("at")?, (values, Stored::As(values)));
    }
    for (at, points) in days {
        for point in points.iter().filter(storable) {
            let Some(id) = ids.get(&point.control) else {
                continue;
            };
            let stored = series
                .get(id)
                .and_then(|rows| rows.get(&at.unix_timestamp()))
                .map_or(Stored::No, |(_, stored)| *stored);
            series
                .entry(*id)
                .or_default()
                .insert(at.unix_timestamp(), (Values::of(point), stored));
        }
    }
    let mut inserted = 0;
    for (control, rows) in &series {
        let mut previous: Option<Values> = None;
        for (at, (values, stored)) in rows {
            let keep = previous != Some(*values);
            previous = Some(*values);
            match (keep, stored) {
                (true, Stored::As(old)) if old == values => {}
                (true, _) => {
                    sqlx::query(
                        "INSERT INTO history_control_points \
                         (tenant, control, at, score, max_score, state) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (tenant, control, at) DO UPDATE SET \
                         score = excluded.score, max_score = excluded.max_score, \
                         state = excluded.state",
                    )
                    .bind(tenant)
                    .bind(*control)
                    .bind(*at)
                    .bind(values.score)
                    .bind(values.max_score)
                    .bind(values.state.as_str())
                    .execute(&mut **transaction)
                    .await?;
                    if *stored == Stored::No {
                        inserted += 1;
                    }
                }
                (false, Stored::As(_)) => {
                    sqlx::query(
                        "DELETE FROM history_control_points \
                         WHERE tenant = $1 AND control = $2 AND at = $3",
                    )
                    .bind(tenant)
                    .bind(*control)
                    .bind(*at)
                    .execute(&mut **transaction)
                    .await?;
                }
                (false, Stored::No) => {}
            }
        }
    }
    Ok(inserted)
}
