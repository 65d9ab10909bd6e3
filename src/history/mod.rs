//! The score history: every successful reading kept, bounded, and served as trends, portfolio
//! statistics and day-over-day changes.
//!
//! Owns the database (SQLite embedded by default, PostgreSQL for several replicas), its schema
//! (versioned migrations in `migrations/sqlite` and `migrations/postgres`, applied at start), the
//! writer that takes readings off the request path, and the periodic roll-up and retention. It
//! does not decide *when* a reading is recorded (the fetch path calls [`History::record`]) nor
//! which tenants a caller may see (the API passes the visible set in).
//!
//! # Layout
//!
//! - this file: [`History`], the one handle the rest of the gateway holds.
//! - `controls`: the per-control history's types ([`ControlPoint`], [`ControlChange`]).
//! - `types`: the domain types ([`Interval`], [`Reading`], [`Point`], …) and the error.
//! - `store`: [`Store`], the SQL over one `sqlx::AnyPool` (one code path for both engines).
//! - `writer`: the bounded channel and the background task that writes batches, with back-off.
//! - `file`: whether the SQLite file is still the one opened (not deleted nor replaced).
//! - `binding`: which Entra tenant each tenant id stands for; a re-pointed id starts a new series.
//! - `past`: the past scores read today (for `change_Nd`) and the test hold on their start-up load.
//! - `read`: the policies of every read (database known away, read permits, deadline).
//! - `jobs`: the background jobs (hourly roll-up and retention, the SQLite file check).
//!
//! # One code path over two engines
//!
//! The store uses sqlx's `Any` driver: one pool type, one set of statements written in the SQL
//! both engines accept (`$n` parameters, `ON CONFLICT … DO UPDATE`, `CASE` instead of
//! `GREATEST`/`max()`, window functions, integer Unix seconds instead of timestamp types). Only
//! the migrations differ (column types), one directory per engine, embedded by `migrations`.
//! sqlx's migrator takes a PostgreSQL advisory lock (`pg_advisory_lock`) around the migrations,
//! so replicas starting together apply them once.

mod binding;
mod config;
mod controls;
mod file;
mod jobs;
mod migrations;
mod past;
pub use past::PastScores;
mod read;
mod store;
mod types;
mod writer;

pub use binding::{Binding, Rebound};
pub use controls::{valid_control_id, ControlChange, ControlPoint, MAX_CONTROL_ID};
pub use file::FileState;
#[cfg(feature = "test-hooks")]
pub use past::hooks::{hold_past_load, past_load_held, release_past_load};
pub use read::{ReadGate, ReadLimits};
pub use store::{retention_start, ControlReading, Store};
pub use types::{DailySnapshot, HistoryError, Interval, Past, Point, PortfolioPoint, Reading};
pub use writer::WriterStats;

use crate::metrics::HistoryMetrics;
use crate::model::TenantId;
pub use config::HistoryConfig;
use jobs::{maintain, watch_file, FileWatch};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use types::statistics;

/// Seconds in an hour, the finest resolution kept.
pub const HOUR: i64 = 3_600;
/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Points older than this many days are rolled up to one per day.
pub const ROLL_UP_AFTER_DAYS: i64 = 30;
/// How often the roll-up and retention job runs.
pub const MAINTENANCE_PERIOD: std::time::Duration = std::time::Duration::from_secs(3_600);
/// How often the SQLite file is checked (readiness checks it too, on every probe).
pub const FILE_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Which score a point is of: the one metric type of the gateway, re-exported so that history
/// users need one import (the database stores [`Metric::as_str`]).
pub use crate::model::Metric;

/// The gateway's handle on the history: the writer's channel and, once connected, the store.
///
/// Built by [`History::start`] without waiting for the database: a database that is missing or
/// unreachable at start delays nothing; it is connected (and migrated) in the background, with
/// back-off, while readings wait in the bounded buffer.
pub struct History {
    /// The store, set once the database is connected and migrated.
    store: Arc<OnceLock<Store>>,
    /// The writer's end of the bounded channel.
    writer: writer::Writer,
    /// Days points are kept: the API refuses ranges older than this.
    retention_days: u32,
    /// Days alert events and finished webhook deliveries are kept (the alerts' own job
    /// deletes them: their tables live in this database, their rules elsewhere).
    alerts_retention_days: u32,
    /// Stops the background tasks when the handle is dropped.
    stop: CancellationToken,
    /// Set once the store is published (bindings applied): the start-up load of the past
    /// scores waits for it.
    connected: tokio::sync::watch::Receiver<bool>,
    /// The metrics whose past scores are being read (the start-up load, [`History::load_past`],
    /// or one request's read in [`History::changes`]): `changes` of such a metric waits for it
    /// instead of reading for itself.
    loading: tokio::sync::watch::Sender<Vec<Metric>>,
    /// Metrics whose start-up load has ended (read or failed), for tests.
    past_loads: AtomicU64,
    /// The database URL as configured, only to find a test's hold on the start-up load.
    #[cfg(feature = "test-hooks")]
    url: String,
    /// The SQLite file's state as last checked, and its gauge: the log tells each change once.
    file: Arc<FileWatch>,
    /// The tenants' Entra bindings, applied before the store is published and on reload.
    bindings: Arc<binding::Gate>,
    /// The read policies: reads never take the whole pool from the writer and the alerts,
    /// never run without a deadline, and fail fast while the database is away.
    reads: ReadGate,
    /// Secure score back-fill tasks started and ended (see [`History::backfills`]).
    backfills_started: AtomicU64,
    backfills_ended: AtomicU64,
}

/// Ends the start-up load of the past scores when dropped: every metric it had not loaded is
/// left to the requests.
struct LoadEnded(std::sync::Weak<History>);

impl Drop for LoadEnded {
    fn drop(&mut self) {
        if let Some(history) = self.0.upgrade() {
            history.loading.send_replace(Vec::new());
        }
    }
}

/// Ends a request's read of one metric's past scores, however its task ends: the requests
/// waiting for it look again.
struct ReadEnded(std::sync::Weak<History>, Metric);

impl Drop for ReadEnded {
    fn drop(&mut self) {
        if let Some(history) = self.0.upgrade() {
            history
                .loading
                .send_modify(|metrics| metrics.retain(|loading| *loading != self.1));
        }
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("connected", &self.store.get().is_some())
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl History {
    /// Starts the history on `runtime`: connects and migrates in the background (retrying until
    /// the database answers), then writes recorded readings and runs the hourly roll-up and
    /// retention with the wall clock.
    pub fn start(
        config: &HistoryConfig,
        metrics: HistoryMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        Self::start_with_clock(
            config,
            metrics,
            runtime,
            Arc::new(OffsetDateTime::now_utc),
            MAINTENANCE_PERIOD,
        )
    }

    /// [`History::start`] with the clock the roll-up and retention job reads as "now" and the
    /// period it runs at (tests move the clock and shorten the period).
    pub fn start_with_clock(
        config: &HistoryConfig,
        metrics: HistoryMetrics,
        runtime: &tokio::runtime::Handle,
        clock: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
        period: std::time::Duration,
    ) -> Self {
        Self::spawn(config, metrics, runtime, clock, period, None)
    }

    /// [`History::start`] for the registered tenants: each (tenant id, Entra tenant id) in
    /// `bindings` is checked against the database before anything reads or writes it; a tenant
    /// id re-pointed at another Entra tenant starts a new series ([`History::bind_tenants`]).
    pub fn start_for_tenants(
        config: &HistoryConfig,
        metrics: HistoryMetrics,
        runtime: &tokio::runtime::Handle,
        bindings: Vec<Binding>,
    ) -> Self {
        Self::spawn(
            config,
            metrics,
            runtime,
            Arc::new(OffsetDateTime::now_utc),
            MAINTENANCE_PERIOD,
            Some(bindings),
        )
    }

    fn spawn(
        config: &HistoryConfig,
        metrics: HistoryMetrics,
        runtime: &tokio::runtime::Handle,
        clock: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
        period: std::time::Duration,
        bindings: Option<Vec<Binding>>,
    ) -> Self {
        let bindings = Arc::new(binding::Gate::new(bindings));
        let store = Arc::new(OnceLock::new());
        let (connected, connected_receiver) = tokio::sync::watch::channel(false);
        let stop = CancellationToken::new();
        let file = Arc::new(FileWatch {
            last: parking_lot::Mutex::new(FileState::Same),
            metrics: metrics.clone(),
        });
        runtime.spawn(watch_file(store.clone(), file.clone(), stop.clone()));
        let writer = writer::Writer::spawn(
            writer::Target {
                url: config.url.clone(),
                description: config.redacted_url(),
                store: store.clone(),
                bindings: bindings.clone(),
                connected,
            },
            config.buffer,
            metrics,
            stop.clone(),
            runtime,
        );
        runtime.spawn(maintain(
            store.clone(),
            config.retention_days,
            clock,
            period,
            stop.clone(),
        ));
        Self {
            store,
            writer,
            retention_days: config.retention_days,
            alerts_retention_days: config.alerts_retention_days,
            stop,
            connected: connected_receiver,
            loading: tokio::sync::watch::Sender::new(Vec::new()),
            past_loads: AtomicU64::new(0),
            #[cfg(feature = "test-hooks")]
            url: secrecy::ExposeSecret::expose_secret(&config.url).to_owned(),
            file,
            bindings,
            reads: ReadGate::new(ReadLimits::default()),
            backfills_started: AtomicU64::new(0),
            backfills_ended: AtomicU64::new(0),
        }
    }

    /// Checks now whether the SQLite file is still the one opened (readiness asks on every
    /// probe); the gauge and the log follow. [`FileState::Same`] before the database is
    /// connected and when nothing is watched.
    pub fn check_file(&self) -> FileState {
        let state = self.store.get().map_or(FileState::Same, Store::file_state);
        self.file.record(state);
        state
    }

    /// Checks each (tenant id, Entra tenant id) against the database (now, or once connected):
    /// a tenant id whose Entra tenant changed starts a new series. The previous customer's
    /// points and alert events move under an archived id, its alert states are reset, a WARN
    /// says so; readings recorded before are written first (for up to 5 s). Returns the tenant
    /// ids that were re-bound now.
    pub async fn bind_tenants(&self, bindings: Vec<Binding>) -> Vec<String> {
        let flushed = async {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.flush()).await;
        };
        let rebound = self.bindings.bind(bindings, &self.store, flushed).await;
        let tenants: Vec<String> = rebound.into_iter().map(|rebound| rebound.tenant).collect();
        if !tenants.is_empty() {
            // The past scores read today were the previous customer's.
            if let Ok(store) = self.store() {
                store.past().lock().forget_tenants(&tenants);
            }
        }
        tenants
    }

    /// This history with other read limits (tests and benchmarks tighten them).
    pub fn with_read_limits(mut self, limits: ReadLimits) -> Self {
        self.reads = ReadGate::new(limits);
        self
    }

    /// The read policies (for the alerts' reads, which fail fast with the history's).
    pub fn reads(&self) -> &ReadGate {
        &self.reads
    }

    /// One tenant's points (see [`Store::history`]), through the read policies.
    pub async fn tenant_points(
        &self,
        tenant: &str,
        metric: Metric,
        from: OffsetDateTime,
        to: OffsetDateTime,
        interval: Interval,
    ) -> Result<Vec<Point>, HistoryError> {
        let store = self.store()?;
        self.reads
            .run(store.history(tenant, metric, from, to, interval))
            .await
    }

    /// The portfolio of `tenants` (see [`Store::portfolio`]), through the read policies.
    pub async fn portfolio(
        &self,
        tenants: &std::collections::HashSet<String>,
        metric: Metric,
        from: OffsetDateTime,
        to: OffsetDateTime,
        interval: Interval,
    ) -> Result<Vec<PortfolioPoint>, HistoryError> {
        let store = self.store()?;
        self.reads
            .run(store.portfolio(tenants, metric, from, to, interval))
            .await
    }

    /// Records a reading, off the request path: never waits and never fails. When the buffer
    /// is full (the database slow or away) the reading is dropped and counted.
    pub fn record(&self, reading: Reading) {
        self.writer.record(reading);
    }

    /// Records a tenant's controls read `at`, off the request path like [`History::record`]:
    /// never waits and never fails; the store keeps a row only for a control whose score,
    /// maximum or state changed. One call counts as one reading in the writer's counters
    /// (dropped and counted when the buffer is full).
    pub fn record_controls(
        &self,
        tenant: &TenantId,
        at: OffsetDateTime,
        points: Vec<ControlPoint>,
    ) {
        self.writer.record_controls(ControlReading {
            tenant: tenant.to_string(),
            at,
            points,
        });
    }

    /// The changes of one control of one tenant (see [`Store::control_history`]), through the
    /// read policies. `None` when the tenant has no history of the control.
    pub async fn control_history(
        &self,
        tenant: &str,
        control: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Option<Vec<ControlChange>>, HistoryError> {
        let store = self.store()?;
        self.reads
            .run(store.control_history(tenant, control, from, to))
            .await
    }

    /// Waits until every reading recorded before this call is written (or dropped as invalid).
    /// For shutdown and tests; waits as long as the database is away.
    pub async fn flush(&self) {
        self.writer.flush().await;
    }

    /// The writer's counters now.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Secure score back-fill tasks `(started, ended)` so far: a back-fill that rightly makes
    /// no Graph call can be awaited by tests (an absence cannot). A test hook.
    #[cfg(feature = "test-hooks")]
    pub fn backfills(&self) -> (u64, u64) {
        (
            self.backfills_started.load(Ordering::Relaxed),
            self.backfills_ended.load(Ordering::Relaxed),
        )
    }

    /// Counts a back-fill task started (`ended: false`) or ended.
    pub(crate) fn count_backfill(&self, ended: bool) {
        let counter = if ended {
            &self.backfills_ended
        } else {
            &self.backfills_started
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The store, once connected and migrated.
    pub fn store(&self) -> Result<&Store, HistoryError> {
        self.store.get().ok_or(HistoryError::NotConnected)
    }

    /// The tenants' scores at the ends of the days 1, 7, 30 and 90 days before `now` (what
    /// `change_Nd` is computed from). Read from the database once per tenant, metric and UTC day,
    /// then served from memory: `/scores?sort=change_7d` over 10,000 tenants must not cost a
    /// query per request. Tenants without a point that old get [`Past::default`] (all `None`).
    ///
    /// While the start-up load of `metric` runs ([`History::load_past`]), waits for it rather
    /// than reading the same rows again: the caller bounds the wait.
    ///
    /// With several replicas, a back-fill on another replica shows here from the next UTC day.
    pub async fn changes(
        self: &Arc<Self>,
        tenants: &[TenantId],
        metric: Metric,
        now: OffsetDateTime,
    ) -> Result<PastScores, HistoryError> {
        let store = self.store()?;
        let mut loading = self.loading.subscribe();
        let day = Interval::Day.bucket(now.unix_timestamp());
        let missing = loop {
            // One read per metric at a time (the start-up load's, or a request's): the others
            // wait for it and look again. Never fails: `self` holds the sender.
            let _ = loading.wait_for(|metrics| !metrics.contains(&metric)).await;
            let missing = store.past().lock().missing(day, metric, tenants);
            if missing.tenants.is_empty() {
                return Ok(store.past().lock().get(metric, tenants));
            }
            let claimed = self.loading.send_if_modified(|metrics| {
                let free = !metrics.contains(&metric);
                if free {
                    metrics.push(metric);
                }
                free
            });
            if claimed {
                break missing;
            }
        };
        // The read runs in a task of its own, so that a caller that stops waiting (a `/scores`
        // whose grace for the changes is over) does not cancel it: what it reads is kept for
        // the next callers. Cancelled with the caller, and one per request, the reads of a busy
        // gateway never filled the memory and every `/scores` read the same rows again,
        // holding the read permits the history routes then could not get (503 under load).
        let history = self.clone();
        let read = tokio::spawn(async move {
            let _claim = ReadEnded(Arc::downgrade(&history), metric);
            let store = history.store()?;
            let read = history
                .reads
                .run(store.changes(&missing.names(), metric, now))
                .await?;
            Ok::<_, HistoryError>(store.past().lock().fill(metric, missing, read))
        });
        let mut found = read.await.map_err(|_| HistoryError::Busy)??;
        store.past().lock().get_into(metric, tenants, &mut found);
        Ok(found)
    }

    /// Reads today's past scores of `tenants` for every metric, in the background, one read
    /// per metric once the database is connected: the first `/scores` after a start then finds
    /// its changes in memory instead of every concurrent request reading them for itself (and
    /// most giving up). Until a metric's load has ended, [`History::changes`] of that metric
    /// waits for it. A load that fails leaves the reads to the requests, as before.
    pub fn load_past(self: &Arc<Self>, tenants: Vec<TenantId>, runtime: &tokio::runtime::Handle) {
        self.loading.send_replace(Metric::ALL.to_vec());
        let history = Arc::downgrade(self);
        let mut connected = self.connected.clone();
        let stop = self.stop.clone();
        #[cfg(feature = "test-hooks")]
        let url = self.url.clone();
        runtime.spawn(async move {
            // However the task ends (stopped, or a panic), no request waits for it any longer.
            let _ended = LoadEnded(history.clone());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = connected.wait_for(|connected| *connected) => {}
            }
            #[cfg(feature = "test-hooks")]
            past::hooks::wait_while_held(&url).await;
            for metric in Metric::ALL {
                let Some(history) = history.upgrade() else {
                    return;
                };
                history.load_past_of(&tenants, metric).await;
            }
        });
    }

    /// The start-up load of one metric (see [`History::load_past`]).
    async fn load_past_of(&self, tenants: &[TenantId], metric: Metric) {
        let now = OffsetDateTime::now_utc();
        let loaded = async {
            let store = self.store()?;
            let day = Interval::Day.bucket(now.unix_timestamp());
            let missing = store.past().lock().missing(day, metric, tenants);
            let read = self
                .reads
                .run(store.changes(&missing.names(), metric, now))
                .await?;
            store.past().lock().fill(metric, missing, read);
            Ok::<(), HistoryError>(())
        }
        .await;
        match loaded {
            Ok(()) => tracing::info!(
                tenants = tenants.len(),
                "history: today's past {metric} scores loaded"
            ),
            Err(error) => tracing::warn!(
                "history: loading today's past {metric} scores at start-up failed; requests read them: {}",
                crate::telemetry::error_chain(&error)
            ),
        }
        self.loading
            .send_modify(|metrics| metrics.retain(|loading| *loading != metric));
        self.past_loads.fetch_add(1, Ordering::Relaxed);
    }

    /// Metrics whose start-up load of the past scores has ended (read or failed). A test hook.
    #[cfg(feature = "test-hooks")]
    pub fn past_loads(&self) -> u64 {
        self.past_loads.load(Ordering::Relaxed)
    }

    /// Forgets the past scores read today for a tenant's metric: a back-fill added older points.
    pub fn forget_past(&self, tenant: &str, metric: Metric) {
        if let Ok(store) = self.store() {
            store.past().lock().forget(tenant, metric);
        }
    }

    /// Days points are kept.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Days alert events and finished webhook deliveries are kept.
    pub fn alerts_retention_days(&self) -> u32 {
        self.alerts_retention_days
    }
}

#[cfg(test)]
mod tests;
