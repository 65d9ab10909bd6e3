//! One fetch in flight: the spawned task that loads a reading, stores it and clears its flight,
//! and the guard that clears the flight however the task ends (panic, cancellation).

use super::{
    Claim, Entry, Flight, Flights, LastFetch, ReadingObserver, ScoreError, ScoreKey, ScoreStore,
    FRESH_JITTER,
};
use crate::code::Code;
use crate::metrics::Metrics;
use crate::policy::{Admitted, FetchError, Outbound};
use crate::tenants::Tenant;
use crate::upstream::UpstreamError;
use parking_lot::Mutex;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Everything a spawned fetch needs, owned, so that it outlives every caller.
pub(super) struct FlightTask {
    /// When the flight began: a reading another replica stored since then answers it.
    pub(super) started: SystemTime,
    pub(super) number: u64,
    pub(super) key: ScoreKey,
    pub(super) tenant: Arc<Tenant>,
    /// The gate's leave for this flight, spent by its first fetch; a fetch after waiting for
    /// another replica's asks the gate again (that fetch's failure may have started a back-off).
    pub(super) admitted: Mutex<Option<Admitted>>,
    pub(super) outbound: Arc<Outbound>,
    pub(super) entries: Arc<dyn ScoreStore>,
    pub(super) flights: Flights,
    pub(super) last_fetch: Arc<Mutex<HashMap<ScoreKey, LastFetch>>>,
    pub(super) fresh: Duration,
    pub(super) metrics: Arc<Metrics>,
    pub(super) observer: Option<Arc<dyn ReadingObserver>>,
    /// Panic on purpose (a test's injected fault).
    pub(super) panic: bool,
    /// Clears the flight if the task never gets to (panic, cancellation).
    pub(super) guard: FlightGuard,
}

impl FlightTask {
    pub(super) async fn run(mut self) -> Result<Arc<Entry>, ScoreError> {
        if self.panic {
            panic!("a test injected a panic into this fetch");
        }
        let deadline = self.outbound.deadline();
        let result = self.fetch_once(deadline).await;
        let current = self.is_current().await;
        // A fetch the gate refused attempted nothing: it is no outcome to remember; nor is one
        // the reload forgot.
        let result = match result {
            Err(FetchError::Gated(gated)) => Err(gated.into_error(self.key.metric.service())),
            Err(FetchError::Upstream(error)) => {
                if current {
                    self.remember(Some(error.clone()));
                }
                Err(error)
            }
            Ok(entry) => {
                if current {
                    self.remember(None);
                }
                Ok(entry)
            }
        };
        // Stored before the flight leaves the map: a caller who finds no flight finds the entry.
        let mut flights = self.flights.lock().await;
        if flights
            .get(&self.key)
            .is_some_and(|(number, _)| *number == self.number)
        {
            flights.remove(&self.key);
        }
        drop(flights);
        self.guard.finished = true;
        result.map_err(ScoreError::Upstream)
    }

    /// Whether this flight is still the one in the map for its key: a reload drops the flights
    /// of a tenant that left or now stands for another Entra tenant
    /// ([`ScoreCache::retain`](super::ScoreCache::retain)), and such a fetch's reading is
    /// the previous registration's: it answers the requests that waited for it, and is neither
    /// stored nor recorded.
    async fn is_current(&self) -> bool {
        self.flights
            .lock()
            .await
            .get(&self.key)
            .is_some_and(|(number, _)| *number == self.number)
    }

    fn remember(&self, error: Option<UpstreamError>) {
        self.last_fetch.lock().insert(
            self.key.clone(),
            LastFetch {
                at: SystemTime::now(),
                finished: Instant::now(),
                error: error.map(Box::new),
            },
        );
    }

    /// Fetches, unless another replica sharing the store fetches the same key: then its
    /// reading is this flight's. When that fetch ends without a reading, the claim is tried
    /// again (the shared back-off decides whether this replica may call).
    async fn fetch_once(&self, deadline: Instant) -> Result<Arc<Entry>, FetchError> {
        let hold = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        loop {
            match self.entries.claim(&self.key, self.started, hold).await {
                Claim::Ready(entry) => return Ok(entry),
                Claim::Fetch(token) => {
                    let result = self.fetch(deadline).await;
                    if let Some(token) = token {
                        self.entries.release(&self.key, token).await;
                    }
                    return result;
                }
                Claim::Wait => {
                    // The other replica's fetch may fail and start a back-off: a fetch after
                    // this wait asks the gate again.
                    drop(self.admitted.lock().take());
                    if let Some(entry) = self
                        .entries
                        .wait_for(&self.key, self.started, deadline)
                        .await
                    {
                        return Ok(entry);
                    }
                    if Instant::now() >= deadline {
                        return Err(FetchError::Upstream(UpstreamError::Timeout {
                            service: self.key.metric.service(),
                        }));
                    }
                }
            }
        }
    }

    async fn fetch(&self, deadline: Instant) -> Result<Arc<Entry>, FetchError> {
        let metric = self.key.metric;
        let admitted = self.admitted.lock().take();
        let result = match admitted {
            Some(admitted) => {
                self.outbound
                    .fetch_admitted(admitted, &self.tenant, deadline)
                    .await
            }
            None => self.outbound.fetch(&self.tenant, metric, deadline).await,
        };
        match result {
            Ok(reading) => {
                let jitter = rand::rng().random_range(0.0..FRESH_JITTER);
                let entry = Arc::new(Entry::new(
                    reading,
                    Instant::now(),
                    self.fresh.mul_f64(1.0 - jitter),
                ));
                if !self.is_current().await {
                    return Ok(entry);
                }
                self.entries
                    .insert(self.key.clone(), entry.clone(), &self.tenant.tenant_id)
                    .await;
                if !self.is_current().await {
                    // Forgotten between the look and the store: undone.
                    self.entries.remove(&self.key).await;
                    return Ok(entry);
                }
                self.metrics.fetch(None);
                self.metrics.tenant_success(
                    &self.tenant.id,
                    metric,
                    entry.reading.score,
                    entry.reading.fetched_at,
                );
                // Here and nowhere else: one fetch, one reading (cache hits are no readings).
                if let Some(observer) = &self.observer {
                    observer.on_reading(&self.tenant, metric, &entry.reading);
                }
                Ok(entry)
            }
            Err(FetchError::Upstream(error)) => {
                self.metrics.fetch(Some(error.code()));
                self.metrics.tenant_failure(
                    &self.tenant.id,
                    metric,
                    self.outbound
                        .consecutive_failures(&self.tenant, metric)
                        .await,
                );
                tracing::warn!(tenant = %self.tenant.id, metric = metric.as_str(), "fetch failed: {error}");
                if let Some(observer) = &self.observer {
                    observer.on_failure(&self.tenant, metric);
                }
                Err(FetchError::Upstream(error))
            }
            Err(gated) => Err(gated),
        }
    }
}

/// Clears a fetch's in-flight marker however its task ends. A task that panics or is cancelled
/// never reaches its own clean-up; without this guard the tenant's marker would stay behind and
/// every later request would join a flight that is long dead.
pub(super) struct FlightGuard {
    pub(super) number: u64,
    pub(super) key: ScoreKey,
    pub(super) flights: Flights,
    pub(super) metrics: Arc<Metrics>,
    pub(super) runtime: tokio::runtime::Handle,
    /// Set once the task has cleaned up after itself.
    pub(super) finished: bool,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if std::thread::panicking() {
            tracing::error!(tenant = %self.key.tenant, "a score fetch panicked: this fetch answers `internal`, the next one starts afresh");
            self.metrics.fetch(Some(Code::Internal));
        } else {
            tracing::warn!(tenant = %self.key.tenant, "a score fetch was cancelled: the gateway is shutting down");
            self.metrics.fetch(Some(Code::ShuttingDown));
        }
        let remove = |flights: &mut HashMap<ScoreKey, (u64, Flight)>, key: &ScoreKey| {
            if flights
                .get(key)
                .is_some_and(|(number, _)| *number == self.number)
            {
                flights.remove(key);
            }
        };
        match self.flights.try_lock() {
            Ok(mut flights) => remove(&mut flights, &self.key),
            Err(_) => {
                // Drop cannot wait for the lock: clean up from a task. A runtime that is
                // stopping drops the task, and with it every flight: nothing is left to clear.
                let flights = self.flights.clone();
                let key = self.key.clone();
                let number = self.number;
                self.runtime.spawn(async move {
                    let mut flights = flights.lock().await;
                    if flights.get(&key).is_some_and(|(n, _)| *n == number) {
                        flights.remove(&key);
                    }
                });
            }
        }
    }
}
