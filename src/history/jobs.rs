//! The history's background jobs: the hourly roll-up and retention, and the periodic check of
//! the SQLite file (its gauge and its log lines).

use super::{FileState, Store, FILE_CHECK_PERIOD};
use crate::metrics::HistoryMetrics;
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The last state of the SQLite file, shared by the periodic check and readiness.
#[derive(Debug)]
pub(super) struct FileWatch {
    /// The state last recorded: a change is logged once, not on every check.
    pub(super) last: parking_lot::Mutex<FileState>,
    /// Holds `scoregate_history_file_lost`.
    pub(super) metrics: HistoryMetrics,
}

impl FileWatch {
    /// Records `state`: the gauge, and a log line when it changed.
    pub(super) fn record(&self, state: FileState) {
        let mut last = self.last.lock();
        if *last == state {
            return;
        }
        *last = state;
        self.metrics
            .file_lost
            .set(i64::from(state != FileState::Same));
        if state == FileState::Same {
            tracing::info!("history: {}", state.describe());
        } else {
            tracing::error!(
                "history: {}; restart the gateway to open the file at that path again (scoregate_history_file_lost = 1, readiness fails until then)",
                state.describe()
            );
        }
    }
}

/// The roll-up and retention job: waits for the store, then runs at once and every `period`
/// (tokio time), with `clock` for "now".
pub(super) async fn maintain(
    store: Arc<OnceLock<Store>>,
    retention_days: u32,
    clock: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
    period: std::time::Duration,
    stop: CancellationToken,
) {
    // The writer connects; this job only waits for it, so a database that comes late is
    // maintained as soon as it is there, not a period later.
    let store = loop {
        if let Some(store) = store.get() {
            break store.clone();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = clock();
        match store.roll_up(now).await {
            Ok(rolled) if rolled > 0 => {
                tracing::info!(rolled, "history: hourly points rolled up to days")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                "history: roll-up failed, retried next hour: {}",
                crate::telemetry::error_chain(&error)
            ),
        }
        match store.enforce_retention(now, retention_days).await {
            Ok(deleted) if deleted > 0 => {
                tracing::info!(deleted, "history: points past retention deleted")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                "history: retention failed, retried next hour: {}",
                crate::telemetry::error_chain(&error)
            ),
        }
    }
}

/// Checks the SQLite file every [`FILE_CHECK_PERIOD`] once the database is connected.
pub(super) async fn watch_file(
    store: Arc<OnceLock<Store>>,
    file: Arc<FileWatch>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(FILE_CHECK_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(store) = store.get() {
            file.record(store.file_state());
        }
    }
}
