//! The SQL of the history over one `sqlx::AnyPool`: the same statements for SQLite and
//! PostgreSQL (see the module docs for the subset of SQL they keep to).
//!
//! Every function that depends on "now" takes it as an argument, so tests move time freely.

use super::file::{FileState, WatchedFile};
use super::past::PastCache;
use super::{
    DailySnapshot, HistoryError, Interval, Metric, Reading, DAY, HOUR, ROLL_UP_AFTER_DAYS,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Row};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

mod controls;
mod queries;
pub use controls::ControlReading;
#[cfg(test)]
use queries::portfolio_sql;

/// Hourly rows rolled up per transaction: bounds the memory and the time the writer waits.
const ROLL_UP_CHUNK: i64 = 20_000;

/// Tenants per `changes` statement: within both engines' limits on bound parameters
/// (SQLite 32,766, PostgreSQL 65,535), so that the start-up load of 10,000 tenants' past scores
/// is one statement per metric, not one per tenant nor per few thousand.
const CHANGES_CHUNK: usize = 30_000;

/// Tenants a portfolio statement names, at most: within SQLite's 32,766 bound parameters. A
/// caller who sees more (beyond the gateway's design) reads the metric's range whole, its
/// tenants kept as the rows stream by.
const PORTFOLIO_TENANTS: usize = 30_000;

/// Merges a bucket's new contribution into the stored row: the later reading's score wins
/// (readings may arrive out of order: back-fills, several replicas), min and max widen,
/// samples add up. `CASE` rather than `GREATEST`/`max()`: the one spelling both engines know.
const UPSERT: &str = "INSERT INTO history_points \
    (tenant, metric, at, resolution, last, last_at, min, max, samples, max_score) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (tenant, metric, at) DO UPDATE SET \
    resolution = CASE WHEN excluded.resolution > history_points.resolution \
        THEN excluded.resolution ELSE history_points.resolution END, \
    last = CASE WHEN excluded.last_at >= history_points.last_at \
        THEN excluded.last ELSE history_points.last END, \
    max_score = CASE WHEN excluded.last_at >= history_points.last_at \
        THEN excluded.max_score ELSE history_points.max_score END, \
    last_at = CASE WHEN excluded.last_at >= history_points.last_at \
        THEN excluded.last_at ELSE history_points.last_at END, \
    min = CASE WHEN excluded.min < history_points.min THEN excluded.min ELSE history_points.min END, \
    max = CASE WHEN excluded.max > history_points.max THEN excluded.max ELSE history_points.max END, \
    samples = history_points.samples + excluded.samples";

/// One bucket's row (or contribution), as stored.
#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    at: i64,
    last: f64,
    last_at: i64,
    min: f64,
    max: f64,
    samples: i64,
    max_score: Option<f64>,
}

impl Bucket {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            at: row.try_get("at")?,
            last: row.try_get("last")?,
            last_at: row.try_get("last_at")?,
            min: row.try_get("min")?,
            max: row.try_get("max")?,
            samples: row.try_get("samples")?,
            max_score: row.try_get("max_score")?,
        })
    }

    /// Folds `other` (of the same bucket) into `self`, as [`UPSERT`] does.
    fn merge(&mut self, other: &Self) {
        if other.last_at >= self.last_at {
            self.last = other.last;
            self.last_at = other.last_at;
            self.max_score = other.max_score;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.samples += other.samples;
    }
}

/// The history database: a pool over SQLite or PostgreSQL, migrated.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Whether the database is PostgreSQL (else SQLite): the few statements that differ ask.
    postgres: bool,
    /// SQLite's `max_page_count` applied to each connection as it is opened or acquired (0:
    /// never set, nothing applied): how the tests fill the disk deterministically, see
    /// [`Store::simulate_full_disk`].
    #[cfg(feature = "test-hooks")]
    page_cap: Arc<AtomicU64>,
    /// The SQLite file as opened, to notice it deleted or replaced; `None` when not watched.
    file: Option<Arc<WatchedFile>>,
    /// Control ids already stored, and their numbers (ids are never deleted nor renumbered):
    /// a reading of 70 unchanged controls costs one statement, not 140 more.
    control_ids: Arc<parking_lot::RwLock<std::collections::HashMap<String, i64>>>,
    /// The past scores read today ([`super::History::changes`]): here, beside the writes, so
    /// that every write of a point of an earlier day forgets its tenant's entry, whoever wrote.
    past: Arc<parking_lot::Mutex<PastCache>>,
}

/// Applies the simulated full disk's page cap to `connection` (SQLite; nothing when unset).
async fn apply_page_cap(
    connection: &mut sqlx::AnyConnection,
    page_cap: &AtomicU64,
) -> Result<(), sqlx::Error> {
    let cap = page_cap.load(Ordering::Acquire);
    if cap != 0 {
        // A number, not input: formatted, since a PRAGMA takes no bound parameter.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {cap}"
        )))
        .execute(connection)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies the migrations (under
    /// PostgreSQL's advisory lock, so replicas starting together apply them once).
    pub async fn connect(url: &str) -> Result<Self, HistoryError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let page_cap = Arc::new(AtomicU64::new(0));
        let (on_connect, on_acquire) = (page_cap.clone(), page_cap.clone());
        let pool = AnyPoolOptions::new()
            // SQLite has one writer at a time anyway; readers run beside it in WAL mode.
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |connection, _| {
                let page_cap = on_connect.clone();
                Box::pin(async move {
                    if sqlite {
                        apply_page_cap(connection, &page_cap).await?;
                        // WAL: readers never wait for the writer. NORMAL: a committed point
                        // survives the process being killed (not a power cut), at a fraction of
                        // FULL's fsyncs.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *connection)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *connection)
                            .await?;
                        // 256 KiB of page cache per connection (SQLite's default is 2 MiB):
                        // the file's pages stay in the kernel's cache anyway; four connections'
                        // caches were ~8 MiB of the gateway's resident memory at the default,
                        // ~4 MiB at 1 MiB each (docs/performance.md).
                        sqlx::query("PRAGMA cache_size = -256")
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            .before_acquire(move |connection, _| {
                let page_cap = on_acquire.clone();
                Box::pin(async move {
                    if sqlite {
                        apply_page_cap(connection, &page_cap).await?;
                    }
                    Ok(true)
                })
            })
            // A connection goes back to the pool only outside any transaction. After a failed
            // statement or COMMIT (a full disk: `SQLITE_FULL`) SQLite may have rolled the whole
            // transaction back already; sqlx's ROLLBACK then fails and it still counts the
            // connection in a transaction. Its next `begin` becomes a SAVEPOINT that opens a real
            // transaction, the next failure rolls back to the savepoint but leaves that
            // transaction open, and from then on every "commit" only releases a nested
            // savepoint: nothing is committed, the write lock is held and reads answer from an
            // old snapshot. So a connection counted in a transaction is closed, never reused.
            // The ping first runs the rollback a dropped transaction queued (SQLite runs it on
            // the connection's thread; PostgreSQL counts it out at once).
            .after_release(move |connection, _| {
                Box::pin(async move {
                    if sqlite {
                        connection.ping().await?;
                    }
                    let clean = !connection.is_in_transaction();
                    if !clean {
                        tracing::debug!(
                            "history: a database connection was left inside a transaction after a failure; closed instead of reused"
                        );
                    }
                    Ok(clean)
                })
            })
            .connect(url)
            .await?;
        let migrator = if sqlite {
            &*super::migrations::SQLITE_MIGRATIONS
        } else {
            &*super::migrations::POSTGRES_MIGRATIONS
        };
        migrator.run(&pool).await.map_err(HistoryError::Migrate)?;
        Ok(Self {
            pool,
            postgres: !sqlite,
            #[cfg(feature = "test-hooks")]
            page_cap,
            // After the migrations: the file exists now.
            file: WatchedFile::of(url).map(Arc::new),
            control_ids: Arc::default(),
            past: Arc::default(),
        })
    }

    /// Whether the SQLite file is still the one opened ([`FileState::Same`] when not watched).
    pub fn file_state(&self) -> FileState {
        self.file
            .as_ref()
            .map_or(FileState::Same, |file| file.state())
    }

    /// Simulates a full disk under a SQLite database (tests): while `full`, every connection
    /// of the pool, open or opened later, is capped at the database's current size
    /// (`PRAGMA max_page_count`), so a write that needs a new page fails with `SQLITE_FULL`
    /// as on a full file system; `false` gives the space back. Takes effect as each
    /// connection is next acquired. Nothing on PostgreSQL.
    #[cfg(feature = "test-hooks")]
    pub async fn simulate_full_disk(&self, full: bool) -> Result<(), HistoryError> {
        if self.postgres {
            return Ok(());
        }
        let cap = if full {
            let row = sqlx::query("PRAGMA page_count")
                .fetch_one(&self.pool)
                .await?;
            u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(1).max(1)
        } else {
            // SQLite's largest: the space is back.
            4_294_967_294
        };
        self.page_cap.store(cap, Ordering::Release);
        Ok(())
    }

    /// The pool, for the other tables of this database (alert states and the webhook outbox,
    /// [`crate::alerts`]).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The past scores read today.
    pub(crate) fn past(&self) -> &parking_lot::Mutex<PastCache> {
        &self.past
    }

    /// Whether the database is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Writes `readings` in one transaction: each into its hour's point.
    pub async fn write(&self, readings: &[Reading]) -> Result<(), HistoryError> {
        let mut transaction = self.pool.begin().await?;
        for reading in readings {
            let at = reading.at().unix_timestamp();
            let score = reading.body.score;
            sqlx::query(UPSERT)
                .bind(reading.key.tenant.as_str())
                .bind(reading.key.metric.as_str())
                .bind(Interval::Hour.bucket(at))
                .bind(HOUR)
                .bind(score)
                .bind(at)
                .bind(score)
                .bind(score)
                .bind(1_i64)
                .bind(reading.max_score())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        let mut past = self.past.lock();
        for reading in readings {
            let key = &reading.key;
            let at = reading.at().unix_timestamp();
            past.forget_if_past(key.tenant.as_str(), key.metric, at);
        }
        Ok(())
    }

    /// Back-fills daily points (Graph's 90 daily secure score snapshots on a tenant's first
    /// fetch): one point per snapshot's UTC day, each a day point of one sample. A day that has
    /// a point already keeps it (calling twice changes nothing). Returns the points inserted.
    pub async fn insert_daily(
        &self,
        tenant: &str,
        metric: Metric,
        snapshots: &[DailySnapshot],
    ) -> Result<u64, HistoryError> {
        let mut transaction = self.pool.begin().await?;
        let mut inserted = 0;
        for snapshot in snapshots.iter().filter(|s| s.score.is_finite()) {
            let at = snapshot.at.unix_timestamp();
            let result = sqlx::query(
                "INSERT INTO history_points \
                 (tenant, metric, at, resolution, last, last_at, min, max, samples, max_score) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (tenant, metric, at) DO NOTHING",
            )
            .bind(tenant)
            .bind(metric.as_str())
            .bind(Interval::Day.bucket(at))
            .bind(DAY)
            .bind(snapshot.score)
            .bind(at)
            .bind(snapshot.score)
            .bind(snapshot.score)
            .bind(1_i64)
            .bind(snapshot.max_score)
            .execute(&mut *transaction)
            .await?;
            inserted += result.rows_affected();
        }
        transaction.commit().await?;
        if let Some(oldest) = snapshots.iter().map(|s| s.at.unix_timestamp()).min() {
            self.past.lock().forget_if_past(tenant, metric, oldest);
        }
        Ok(inserted)
    }

    /// Whether `tenant` has any point of `metric` (the fetch path back-fills `secure` when not).
    pub async fn has_points(&self, tenant: &str, metric: Metric) -> Result<bool, HistoryError> {
        let row =
            sqlx::query("SELECT at FROM history_points WHERE tenant = $1 AND metric = $2 LIMIT 1")
                .bind(tenant)
                .bind(metric.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Whether `tenant` has any day point of `metric`: a back-fill's (or a roll-up's, after 30
    /// days of readings). The fetch path back-fills `secure` when not. Hourly points do not
    /// count: the reading that triggers the back-fill may be written before this is asked.
    pub async fn has_daily_points(
        &self,
        tenant: &str,
        metric: Metric,
    ) -> Result<bool, HistoryError> {
        let row = sqlx::query(
            "SELECT at FROM history_points \
             WHERE tenant = $1 AND metric = $2 AND resolution = $3 LIMIT 1",
        )
        .bind(tenant)
        .bind(metric.as_str())
        .bind(DAY)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Rolls hourly points whose day ended more than [`ROLL_UP_AFTER_DAYS`] before `now`'s day
    /// up into one point per day. Works in chunks, each one transaction; a chunk may cut a day
    /// in two, which is harmless: the second half merges into the day point the first made.
    /// Returns the hourly points rolled up.
    pub async fn roll_up(&self, now: OffsetDateTime) -> Result<u64, HistoryError> {
        let cutoff = Interval::Day.bucket(now.unix_timestamp()) - ROLL_UP_AFTER_DAYS * DAY;
        let mut total = 0;
        loop {
            let mut transaction = self.pool.begin().await?;
            let rows = sqlx::query(
                "SELECT tenant, metric, at, last, last_at, min, max, samples, max_score \
                 FROM history_points WHERE resolution = $1 AND at < $2 \
                 ORDER BY tenant, metric, at LIMIT $3",
            )
            .bind(HOUR)
            .bind(cutoff)
            .bind(ROLL_UP_CHUNK)
            .fetch_all(&mut *transaction)
            .await?;
            if rows.is_empty() {
                transaction.commit().await?;
                return Ok(total);
            }
            let mut days: BTreeMap<(String, String, i64), Bucket> = BTreeMap::new();
            for row in &rows {
                let tenant: String = row.try_get("tenant")?;
                let metric: String = row.try_get("metric")?;
                let hour = Bucket::from_row(row)?;
                // Delete first: the 00:00 hour and its day share the key.
                sqlx::query(
                    "DELETE FROM history_points \
                     WHERE tenant = $1 AND metric = $2 AND at = $3 AND resolution = $4",
                )
                .bind(tenant.as_str())
                .bind(metric.as_str())
                .bind(hour.at)
                .bind(HOUR)
                .execute(&mut *transaction)
                .await?;
                let day = Interval::Day.bucket(hour.at);
                days.entry((tenant, metric, day))
                    .and_modify(|merged| merged.merge(&hour))
                    .or_insert(Bucket { at: day, ..hour });
            }
            for ((tenant, metric, day), row) in &days {
                sqlx::query(UPSERT)
                    .bind(tenant.as_str())
                    .bind(metric.as_str())
                    .bind(*day)
                    .bind(DAY)
                    .bind(row.last)
                    .bind(row.last_at)
                    .bind(row.min)
                    .bind(row.max)
                    .bind(row.samples)
                    .bind(row.max_score)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
            total += u64::try_from(rows.len()).unwrap_or(u64::MAX);
        }
    }

    /// Deletes the points (and per-control rows) of days that ended more than
    /// `retention_days` before `now`'s day. Returns how many.
    pub async fn enforce_retention(
        &self,
        now: OffsetDateTime,
        retention_days: u32,
    ) -> Result<u64, HistoryError> {
        let cutoff = retention_start(now, retention_days);
        let result = sqlx::query("DELETE FROM history_points WHERE at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        // Per-control rows follow the day points. A control unchanged for the whole retention
        // loses its row; the next reading of it stores its values again.
        let controls = sqlx::query("DELETE FROM history_control_points WHERE at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() + controls.rows_affected())
    }

    /// Closes the pool (tests that stop the database first).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The oldest moment kept (Unix seconds): midnight UTC `retention_days` before `now`'s day.
pub fn retention_start(now: OffsetDateTime, retention_days: u32) -> i64 {
    Interval::Day.bucket(now.unix_timestamp()) - i64::from(retention_days) * DAY
}

#[cfg(test)]
mod tests;
