//! The policies every history read passes, in one order: the database known to be away (fail
//! fast), then a read permit (bounded concurrency), then the query under its deadline.
//!
//! Reads share the database's pool with the writer, the roll-up and the alert rules. Without a
//! bound of their own, a few expensive reads could hold every connection: writes would be lost
//! and alert evaluation would fail. With [`ReadLimits::permits`] below the pool's size, the
//! rest of the pool is always theirs. It deliberately knows no SQL ([`super::Store`] does) and
//! no HTTP (the API's error edge turns [`HistoryError`] into answers).

use super::HistoryError;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The bounds of history reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Reads running at once, at most: below the pool's smallest size (4 on SQLite), so that
    /// writes and alert evaluation always find a connection.
    pub permits: usize,
    /// How long a read waits for a permit before it is refused (`Busy`): a burst queues
    /// briefly, a flood is answered at once instead of piling up.
    pub queue: Duration,
    /// How long one read may take (its query and its rows) before it is given up (`Deadline`).
    pub deadline: Duration,
    /// How long the database is taken to be away after a read could not reach it: reads meet
    /// `Down` meanwhile without waiting for the pool's acquire timeout.
    pub down_for: Duration,
    /// How long one probe (the first read after `down_for`) may take before another read
    /// probes again: about the pool's acquire timeout (5 s).
    pub probe_for: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            permits: 2,
            queue: Duration::from_millis(500),
            // Far above a one-tenant caller's milliseconds; room for a caller who sees 10,000
            // tenants (90 days by day: seconds on two shared cores).
            deadline: Duration::from_secs(20),
            down_for: Duration::from_secs(5),
            probe_for: Duration::from_secs(6),
        }
    }
}

/// Whether a failure means the database cannot be reached (rather than a statement refused):
/// then reads fail fast for a while.
pub fn unreachable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// The read policies' state: the permits, whether the database is known to be away, and how
/// many reads reached the database (for tests and benchmarks).
#[derive(Debug)]
pub struct ReadGate {
    limits: ReadLimits,
    permits: Semaphore,
    /// Until when reads fail fast; `None` while the database is taken to be there.
    down_until: Mutex<Option<Instant>>,
    /// Reads that went to the database (past the availability check and a permit).
    attempts: AtomicU64,
}

impl ReadGate {
    /// A gate with `limits`.
    pub fn new(limits: ReadLimits) -> Self {
        Self {
            limits,
            permits: Semaphore::new(limits.permits.max(1)),
            down_until: Mutex::new(None),
            attempts: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// Reads that went to the database so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// `Err(Down)` while the database is known to be away. Once `down_for` has passed, the
    /// caller is let through as the probe, and the others keep failing fast for `probe_for`
    /// (until the probe has answered, which [`Self::note`] records).
    pub fn check(&self) -> Result<(), HistoryError> {
        let now = Instant::now();
        let mut down_until = self.down_until.lock();
        match *down_until {
            Some(until) if until > now => Err(HistoryError::Down {
                retry_after: until - now,
            }),
            Some(_) => {
                *down_until = Some(now + self.limits.probe_for);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records what a request to the database found: unreachable marks it down for
    /// `down_for`; anything else (an answer, or a statement refused) marks it up.
    pub fn note<T>(&self, result: &Result<T, HistoryError>) {
        match result {
            Err(HistoryError::Database(error)) => self.note_failure(error),
            Ok(_) => self.mark_up(),
            Err(_) => {}
        }
    }

    /// Records a statement that failed with `error` (a history read's, or an alerts read's):
    /// unreachable marks the database away, a statement refused marks it there.
    pub fn note_failure(&self, error: &sqlx::Error) {
        if unreachable(error) {
            self.mark_down();
        } else {
            self.mark_up();
        }
    }

    /// Takes the database to be there: it answered.
    pub fn mark_up(&self) {
        *self.down_until.lock() = None;
    }

    /// Takes the database to be away for `down_for` from now.
    pub fn mark_down(&self) {
        *self.down_until.lock() = Some(Instant::now() + self.limits.down_for);
    }

    /// Runs one read: fails fast while the database is away, waits at most `queue` for a
    /// permit, gives the read `deadline`, and records whether the database answered.
    pub async fn run<T>(
        &self,
        read: impl Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        self.check()?;
        let _permit = match tokio::time::timeout(self.limits.queue, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            // Closed never happens (the gate never closes it); both are "not now".
            Ok(Err(_)) | Err(_) => return Err(HistoryError::Busy),
        };
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.limits.deadline, read).await {
            Ok(result) => result,
            Err(_) => Err(HistoryError::Deadline {
                after: self.limits.deadline,
            }),
        };
        self.note(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ReadLimits {
        ReadLimits {
            permits: 1,
            queue: Duration::from_millis(100),
            deadline: Duration::from_secs(2),
            down_for: Duration::from_secs(5),
            probe_for: Duration::from_secs(6),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_past_its_deadline_is_given_up() {
        let gate = ReadGate::new(limits());
        let result = gate
            .run(std::future::pending::<Result<(), HistoryError>>())
            .await;
        assert!(
            matches!(result, Err(HistoryError::Deadline { after }) if after == Duration::from_secs(2)),
            "{result:?}"
        );
        // The permit came back: the next read runs.
        assert!(gate.run(async { Ok(()) }).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_without_a_permit_is_refused_after_the_queue_bound() {
        let gate = std::sync::Arc::new(ReadGate::new(limits()));
        let (started, wait) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.run(async move {
                    let _ = started.send(());
                    let _ = released.await;
                    Ok(())
                })
                .await
            }
        });
        wait.await.unwrap();
        let before = Instant::now();
        let refused = gate.run(async { Ok(()) }).await;
        assert!(matches!(refused, Err(HistoryError::Busy)), "{refused:?}");
        assert_eq!(before.elapsed(), Duration::from_millis(100));
        assert_eq!(
            gate.attempts(),
            1,
            "the refused read never reached the database"
        );
        release.send(()).unwrap();
        assert!(holder.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_database_fails_reads_fast_until_a_probe_answers() {
        let gate = ReadGate::new(limits());
        let away = gate
            .run(async { Err::<(), _>(HistoryError::Database(sqlx::Error::PoolTimedOut)) })
            .await;
        assert!(matches!(away, Err(HistoryError::Database(_))));
        // Known down: refused without reaching the database, with the time left.
        let fast = gate.run(async { Ok(()) }).await;
        assert!(
            matches!(fast, Err(HistoryError::Down { retry_after }) if retry_after == Duration::from_secs(5)),
            "{fast:?}"
        );
        assert_eq!(gate.attempts(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        // The first read after the window probes; while it runs, the others still fail fast.
        gate.check().expect("the probe goes through");
        assert!(matches!(gate.check(), Err(HistoryError::Down { .. })));
        gate.note(&Ok(()));
        assert!(gate.run(async { Ok(()) }).await.is_ok());
        assert_eq!(gate.attempts(), 2);
    }

    #[test]
    fn only_connection_failures_count_as_unreachable() {
        assert!(unreachable(&sqlx::Error::PoolTimedOut));
        assert!(unreachable(&sqlx::Error::Io(std::io::Error::other(
            "reset"
        ))));
        assert!(!unreachable(&sqlx::Error::RowNotFound));
    }
}
