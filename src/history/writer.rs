//! The writer: readings leave the request path through a bounded channel, and one background
//! task writes them in batched transactions.
//!
//! A full channel drops the reading (counted; logged when dropping starts and when it stops),
//! so a slow or absent database never slows a request. A failed batch is retried with back-off
//! until the database answers again, while new readings wait in the channel within its bound.
//! A batch the database refuses for its content (a constraint) would never succeed: it is
//! dropped and counted instead of blocking every reading behind it.

use super::{ControlReading, HistoryError, Reading, Store};
use crate::metrics::HistoryMetrics;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most readings per transaction.
const MAX_BATCH: usize = 500;
/// First back-off after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest back-off: how late, at most, the writer notices that the database is back.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where the writer writes.
pub(super) struct Target {
    /// The database URL (secret: it may hold a password).
    pub(super) url: SecretString,
    /// The URL without secrets, for logs.
    pub(super) description: String,
    /// Filled once connected and migrated; shared with the queries.
    pub(super) store: Arc<OnceLock<Store>>,
    /// The tenants' Entra bindings, applied before the store is filled.
    pub(super) bindings: Arc<super::binding::Gate>,
    /// Set once the store is filled: the start-up load of the past scores waits for it.
    pub(super) connected: tokio::sync::watch::Sender<bool>,
}

/// What the writer is asked.
enum Command {
    /// Write this reading.
    Record(Reading),
    /// Write the controls that changed.
    Controls(ControlReading),
    /// Answer once everything sent before is written.
    Flush(oneshot::Sender<()>),
}

/// The writer's counters (also exported as `scoregate_history_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Readings written.
    pub written: u64,
    /// Readings dropped: buffer full, or refused by the database.
    pub dropped: u64,
    /// Batches that failed (each is retried, unless refused for its content).
    pub failed_batches: u64,
    /// Readings waiting to be written.
    pub pending: i64,
}

/// The recording end, held by [`super::History`].
pub(super) struct Writer {
    sender: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// State shared by the recording end and the task.
struct Shared {
    metrics: HistoryMetrics,
    /// Whether readings are being dropped now: the log says when it starts and stops.
    dropping: AtomicBool,
}

impl Shared {
    fn drop_readings(&self, count: u64, why: &str) {
        self.metrics.dropped.inc_by(count);
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "history: readings are being dropped ({why}); counted in scoregate_history_dropped"
            );
        }
    }
}

impl Writer {
    /// Opens the channel (`buffer` readings) and spawns the task on `runtime`.
    pub(super) fn spawn(
        target: Target,
        buffer: usize,
        metrics: HistoryMetrics,
        stop: CancellationToken,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        let shared = Arc::new(Shared {
            metrics,
            dropping: AtomicBool::new(false),
        });
        runtime.spawn(run(target, receiver, shared.clone(), stop));
        Self { sender, shared }
    }

    /// Queues `reading`, or drops it (counted) when the buffer is full or it is not a number.
    pub(super) fn record(&self, reading: Reading) {
        let max_score = reading.max_score();
        if !reading.body.score.is_finite() || max_score.is_some_and(|max| !max.is_finite()) {
            self.shared
                .drop_readings(1, "a score that is not a finite number");
            return;
        }
        self.send(Command::Record(reading));
    }

    /// Queues `command` without waiting, or drops it (counted) when the buffer is full.
    fn send(&self, command: Command) {
        match self.sender.try_send(command) {
            Ok(()) => {
                self.shared.metrics.pending.inc();
                if self.shared.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("history: readings are recorded again");
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared
                    .drop_readings(1, "the buffer is full: the database is slow or unreachable");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.drop_readings(1, "the writer has stopped");
            }
        }
    }

    /// Queues a tenant's controls, or drops them (counted as one reading) when the buffer is
    /// full. Controls that hold no storable number are left out when written.
    pub(super) fn record_controls(&self, controls: ControlReading) {
        self.send(Command::Controls(controls));
    }

    /// Waits until everything queued before is written.
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// The counters now.
    pub(super) fn stats(&self) -> WriterStats {
        let metrics = &self.shared.metrics;
        WriterStats {
            written: metrics.written.get(),
            dropped: metrics.dropped.get(),
            failed_batches: metrics.failed_batches.get(),
            pending: metrics.pending.get(),
        }
    }
}

/// The task: connect (retrying), then write batches until the channel closes.
async fn run(
    target: Target,
    mut receiver: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Some(store) = connect(&target, &stop).await else {
        return;
    };
    let store = target.bindings.publish(store, &target.store).await;
    target.connected.send_replace(true);
    // Drains until every sender is gone, so readings queued before shutdown are written.
    while let Some(first) = receiver.recv().await {
        let mut batch = Vec::new();
        let mut controls = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(reading) => batch.push(reading),
                Command::Controls(reading) => controls.push(reading),
                Command::Flush(done) => flushes.push(done),
            }
            if batch.len() + controls.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() && !write(batch.len(), &shared, &stop, || store.write(&batch)).await {
            return;
        }
        let write_controls = || async { store.write_controls(&controls).await.map(|_| ()) };
        if !controls.is_empty() && !write(controls.len(), &shared, &stop, write_controls).await {
            return;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Connects and migrates, retrying with back-off; `None` when stopped first.
async fn connect(target: &Target, stop: &CancellationToken) -> Option<Store> {
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return None,
            attempt = Store::connect(target.url.expose_secret()) => attempt,
        };
        match attempt {
            Ok(store) => {
                tracing::info!(database = %target.description, "history: database connected and migrated");
                return Some(store);
            }
            Err(error) => {
                if !failing {
                    failing = true;
                    tracing::warn!(
                        database = %target.description,
                        "history: cannot open the database, retrying in the background (readings are buffered meanwhile): {}",
                        crate::telemetry::error_chain(&error)
                    );
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Writes one batch of `count` readings with `attempt`, retrying transient failures with
/// back-off. `false` when stopped first.
async fn write<F, Attempt>(
    count: usize,
    shared: &Shared,
    stop: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Attempt,
    Attempt: std::future::Future<Output = Result<(), HistoryError>>,
{
    let count = u64::try_from(count).unwrap_or(u64::MAX);
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let outcome = attempt().await;
        match outcome {
            Ok(()) => {
                shared.metrics.written.inc_by(count);
                shared
                    .metrics
                    .pending
                    .dec_by(i64::try_from(count).unwrap_or(i64::MAX));
                if failing {
                    tracing::info!("history: the database is back; buffered readings written");
                }
                return true;
            }
            Err(error) => {
                shared.metrics.failed_batches.inc();
                if refused_for_content(&error) {
                    shared
                        .metrics
                        .pending
                        .dec_by(i64::try_from(count).unwrap_or(i64::MAX));
                    shared.drop_readings(count, "the database refused a batch");
                    tracing::warn!(
                        "history: the database refused a batch of {count} reading(s), dropped: {}",
                        crate::telemetry::error_chain(&error)
                    );
                    return true;
                }
                if !failing {
                    failing = true;
                    tracing::warn!(
                        "history: writing failed, retrying with back-off (readings are buffered meanwhile): {}",
                        crate::telemetry::error_chain(&error)
                    );
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the database refused the batch for what it holds (a constraint): retrying cannot
/// help. Anything else (connection lost, pool timeout, server restarting) is transient.
fn refused_for_content(error: &HistoryError) -> bool {
    match error {
        HistoryError::Database(sqlx::Error::Database(error)) => {
            !matches!(error.kind(), sqlx::error::ErrorKind::Other)
        }
        _ => false,
    }
}
