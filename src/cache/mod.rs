//! The score cache: fresh and stale windows, single-flight loading, stale-while-revalidate and
//! stale-if-error, over one shared in-process store.
//!
//! Owns the decision *whether* Defender is asked: a fresh entry is served as is; an expired one is
//! served at once as `stale` while exactly one refresh runs; a failure never replaces a good value
//! but feeds the tenant's back-off. However many callers ask for a tenant at once, one fetch runs
//! (a spawned task, so that it finishes and fills the cache even when every caller has given up).
//! How a fetch is made — gate, quota, in-flight cap, retries, token, call — belongs to the policy
//! stack ([`crate::policy`]); the cache only asks its gate before starting a flight, so that a
//! tenant in cool-down or back-off holds no flight.
//!
//! Good readings live behind [`ScoreStore`], keyed by [`ScoreKey`] (tenant and metric): a map in
//! process ([`LocalStore`]), or that map in front of Redis when several replicas share the tenants
//! ([`crate::cluster::store::TieredStore`]), which also makes single flight cluster-wide through
//! [`ScoreStore::claim`].
//!
//! Fetch tasks run on the gateway's own runtime (a handle captured when the services are built),
//! never on the runtime of the HTTP worker that happened to start them: a worker's runtime is
//! dropped when that worker stops at shutdown, and with it every task spawned there, while
//! requests on other workers may still be waiting for those fetches. A guard in every fetch task
//! clears the tenant's in-flight marker however the task ends (success, failure, panic,
//! cancellation), so that no failure of one fetch can wedge a tenant.

use crate::metrics::{CacheResult, Metrics};
/// What a score is cached under: one number per tenant and metric.
pub use crate::model::ScoreKey;
use crate::policy::{Admitted, ForcedFetchFloor, Gated, Outbound, Priority};
use crate::tenants::{Registry, Tenant, TenantId};
use crate::upstream::{Metric, Reading, UpstreamError};
use flight::{FlightGuard, FlightTask};
use futures::future::{BoxFuture, FutureExt, Shared};
use hooks::Faults;
#[cfg(feature = "test-hooks")]
pub use hooks::InjectedFault;
use parking_lot::Mutex;
pub use settings::CacheSettings;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
pub use store::{Claim, Entry, LocalStore, ScoreStore};
use tokio::time::Instant;

/// Where a served score came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fetched from Defender during this request.
    Upstream,
    /// From the cache, within the fresh window.
    Cache,
    /// From the cache, past the fresh window (a refresh runs, or the last one failed).
    Stale,
}

/// A score as served, with its provenance.
#[derive(Debug, Clone)]
pub struct Served {
    /// The cache entry of the reading (shared, not copied).
    entry: Arc<Entry>,
    /// Where it came from.
    pub source: Source,
    /// How long ago it was fetched.
    pub age: Duration,
    /// How long it stays fresh (zero when stale).
    pub fresh_for: Duration,
    /// Why a stale value is served instead of a new one, when a refresh failed.
    pub warning: Option<UpstreamError>,
}

impl Served {
    /// A reading served as `source`, `age` old, fresh for `fresh_for` more.
    pub fn new(
        entry: Arc<Entry>,
        source: Source,
        age: Duration,
        fresh_for: Duration,
        warning: Option<UpstreamError>,
    ) -> Self {
        Self {
            entry,
            source,
            age,
            fresh_for,
            warning,
        }
    }

    /// The reading.
    pub fn reading(&self) -> &Reading {
        &self.entry.reading
    }

    /// The reading rendered by `render`, made once per cached entry (the first caller's
    /// `render` runs; every later serve of the same fetch gets those bytes). For what does not
    /// change from one request to the next; `render` must depend on nothing but the reading
    /// and values fixed for the entry's key (its tenant and metric).
    pub fn rendered(&self, render: impl FnOnce(&Reading) -> Vec<u8>) -> &[u8] {
        self.entry.rendered(render)
    }
}

/// Why no score can be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScoreError {
    /// The fetch failed and nothing cached may be served.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The caller's wait ended first; the fetch goes on in the background and fills the cache.
    #[error("the score was not ready within the request's deadline")]
    Deadline,
    /// The fetch task failed inside the gateway (a bug: it panicked). Only this fetch fails: the
    /// tenant's next request starts a new one.
    #[error("the fetch failed inside the gateway")]
    Internal,
    /// The fetch task was cancelled because the gateway's runtime is stopping.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The tenant does not have the metric asked for: nothing is fetched.
    #[error(
        "tenant {tenant} does not have the {metric} metric; its metrics: {}",
        list(enabled)
    )]
    MetricNotEnabled {
        /// The tenant.
        tenant: TenantId,
        /// The metric asked for.
        metric: Metric,
        /// The metrics the tenant has.
        enabled: Vec<Metric>,
    },
}

/// `device, secure`.
fn list(metrics: &[Metric]) -> String {
    metrics
        .iter()
        .map(|metric| metric.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The outcome of the last fetch of a tenant, for `/tenants/{id}` and warnings.
#[derive(Debug, Clone)]
pub struct LastFetch {
    /// When it finished, for display.
    pub at: SystemTime,
    /// When it finished, for comparisons (tokio's clock: paused in tests, never set back).
    pub finished: Instant,
    /// `None` on success, else the failure. Boxed: one record per tenant and metric is kept,
    /// nearly all of them successes, which would otherwise each hold an error's room.
    pub error: Option<Box<UpstreamError>>,
}

type Flight = Shared<BoxFuture<'static, Result<Arc<Entry>, ScoreError>>>;

/// Fetches in progress by key, with the number of each flight.
type Flights = Arc<tokio::sync::Mutex<HashMap<ScoreKey, (u64, Flight)>>>;

/// The shared score cache and its loaders.
pub struct ScoreCache {
    /// Good readings only.
    entries: Arc<dyn ScoreStore>,
    /// Fetches in progress, one per tenant at most (single flight). A tokio mutex, because the
    /// cache is re-checked under it (an await) so that a fetch finishing meanwhile is not repeated.
    flights: Flights,
    /// Numbers flights, so that a finished fetch removes itself and never a newer one.
    next_flight: std::sync::atomic::AtomicU64,
    /// The last fetch outcome per key.
    last_fetch: Arc<Mutex<HashMap<ScoreKey, LastFetch>>>,
    /// How fetches are made: the policy stack in front of the source.
    outbound: Arc<Outbound>,
    /// Nominal fresh window.
    fresh: Duration,
    /// How long past freshness a good value may cover for failures.
    stale_if_error: Duration,
    /// The floor between forced fetches: a `max_age` shorter than it is raised to it.
    forced: ForcedFetchFloor,
    /// Where look-ups, fetches and per-tenant outcomes are recorded.
    metrics: Arc<Metrics>,
    /// The gateway's own runtime, where every fetch task runs (see the module documentation).
    runtime: tokio::runtime::Handle,
    /// Faults injected by tests into the next fetch of a tenant (nothing without `test-hooks`).
    faults: Faults,
    /// Who is told of each fetch's reading or failure (the history and the alerts, wired by
    /// the composition root); `None` when nobody listens.
    observer: Option<Arc<dyn ReadingObserver>>,
}

/// Who hears of the cache's fetches: the cache reports, it does not know who listens (the
/// history and the alerts, wired by `service`).
///
/// Both calls happen on the fetch task, once per fetch that reached the upstream: they must
/// not wait (hand the work to a buffer or a task of their own).
pub trait ReadingObserver: Send + Sync {
    /// A fetch of `tenant`'s `metric` returned `reading`.
    fn on_reading(&self, tenant: &Arc<Tenant>, metric: Metric, reading: &Reading);
    /// A fetch of `tenant`'s `metric` failed, after its retries.
    fn on_failure(&self, tenant: &Tenant, metric: Metric);
}

/// Share of the fresh window removed at random from each entry (0–15 %).
const FRESH_JITTER: f64 = 0.15;

impl ScoreCache {
    /// Creates the cache; fetch tasks are spawned on `runtime`, which must outlive every HTTP
    /// worker (the runtime the gateway was built on).
    pub fn new(
        settings: &CacheSettings,
        outbound: Arc<Outbound>,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let fresh = Duration::from_secs(settings.fresh_seconds);
        let stale_if_error = Duration::from_secs(settings.stale_if_error_seconds);
        let entries = Arc::new(LocalStore::new(
            settings.max_entries,
            fresh + stale_if_error,
        ));
        Self::with_store(settings, entries, outbound, metrics, runtime)
    }

    /// As [`ScoreCache::new`], over `entries` (a store shared by several replicas).
    pub fn with_store(
        settings: &CacheSettings,
        entries: Arc<dyn ScoreStore>,
        outbound: Arc<Outbound>,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let fresh = Duration::from_secs(settings.fresh_seconds);
        let stale_if_error = Duration::from_secs(settings.stale_if_error_seconds);
        Self {
            entries,
            flights: Arc::default(),
            next_flight: std::sync::atomic::AtomicU64::new(0),
            last_fetch: Arc::default(),
            outbound,
            fresh,
            stale_if_error,
            forced: ForcedFetchFloor {
                min_interval: Duration::from_millis(settings.min_forced_interval_ms),
            },
            metrics,
            runtime,
            faults: Faults::default(),
            observer: None,
        }
    }

    /// Tells `observer` of every fetch's reading and of every failed fetch (cache hits are no
    /// readings).
    pub fn with_observer(mut self, observer: Arc<dyn ReadingObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The policy stack fetches go through.
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    fn key(&self, tenant: &TenantId, metric: Metric) -> ScoreKey {
        ScoreKey {
            tenant: tenant.clone(),
            metric,
        }
    }

    /// The tenant's score. `max_age` bounds the age of what may be served (`0` forces a fetch,
    /// unless one was made less than `[cache] min_forced_interval_ms` ago: then that value is
    /// served); `wait_until` bounds how long this caller waits for a fetch. Counted as a cache hit, a miss
    /// or a stale serve.
    ///
    /// A metric the tenant does not have is [`ScoreError::MetricNotEnabled`], counted nowhere.
    pub async fn get(
        &self,
        tenant: &Arc<Tenant>,
        metric: Metric,
        max_age: Option<Duration>,
        wait_until: Instant,
    ) -> Result<Served, ScoreError> {
        if !tenant.has(metric) {
            return Err(ScoreError::MetricNotEnabled {
                tenant: tenant.id.clone(),
                metric,
                enabled: tenant.metrics().to_vec(),
            });
        }
        let result = self.lookup(tenant, metric, max_age, wait_until).await;
        self.metrics.cache(match &result {
            Ok(Served {
                source: Source::Cache,
                ..
            }) => CacheResult::Hit,
            Ok(Served {
                source: Source::Stale,
                ..
            }) => CacheResult::Stale,
            Ok(_) | Err(_) => CacheResult::Miss,
        });
        result
    }

    /// The tenant's score when the store holds a fresh one it can give without waiting (see
    /// [`ScoreStore::get_now`]), counted as a cache hit; `None` means "ask [`ScoreCache::get`]",
    /// which decides everything else (stale, missing, forced, not enabled).
    ///
    /// `asked_at` is when the caller asked (now, or the start of a fan-out over many tenants:
    /// one clock read for all of them).
    pub fn get_fresh_now(
        &self,
        tenant: &Tenant,
        metric: Metric,
        max_age: Option<Duration>,
        asked_at: Instant,
    ) -> Option<Served> {
        if !tenant.has(metric) {
            return None;
        }
        let entry = self
            .entries
            .get_now(&self.key(&tenant.id, metric), asked_at)?;
        if !self.is_fresh(&entry, asked_at, max_age) {
            return None;
        }
        self.metrics.cache(CacheResult::Hit);
        let age = asked_at.saturating_duration_since(entry.stored_at);
        Some(Served::new(
            entry.clone(),
            Source::Cache,
            age,
            entry.fresh_for.saturating_sub(age),
            None,
        ))
    }

    /// Whether `entry` may be served as it is to a caller asking at `asked_at` with `max_age`.
    fn is_fresh(&self, entry: &Entry, asked_at: Instant, max_age: Option<Duration>) -> bool {
        let age = asked_at.saturating_duration_since(entry.stored_at);
        self.forced.allows(age, max_age) && age < entry.fresh_for
    }

    async fn lookup(
        &self,
        tenant: &Arc<Tenant>,
        metric: Metric,
        max_age: Option<Duration>,
        wait_until: Instant,
    ) -> Result<Served, ScoreError> {
        let asked_at = Instant::now();
        let key = self.key(&tenant.id, metric);
        let cached = self.entries.get(&key).await;
        if let Some(entry) = &cached {
            if self.is_fresh(entry, asked_at, max_age) {
                return Ok(self.served(entry, Source::Cache, None));
            }
            let age = asked_at.saturating_duration_since(entry.stored_at);
            if self.forced.allows(age, max_age) && age <= entry.fresh_for + self.stale_if_error {
                // Stale-while-revalidate: answer now, refresh behind the caller's back.
                self.refresh(tenant, metric, Priority::Interactive).await;
                let warning = self.failure_since(&key, entry);
                return Ok(self.served(entry, Source::Stale, warning));
            }
        }
        let flight = match self.flight(tenant, &key, asked_at).await {
            Ok(flight) => flight,
            Err(error) => return self.stale_or(cached, max_age, error),
        };
        match tokio::time::timeout_at(wait_until, flight).await {
            Ok(Ok(entry)) => Ok(self.served(&entry, Source::Upstream, None)),
            Ok(Err(ScoreError::Upstream(error))) => self.stale_or(cached, max_age, error),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ScoreError::Deadline),
        }
    }

    /// Starts a refresh of the tenant unless one runs already, the tenant must be left alone
    /// (cool-down, failure back-off) or the in-flight cap does not let work of `priority` start
    /// now. Used by stale-while-revalidate ([`Priority::Interactive`]) and the refresher
    /// ([`Priority::Background`]).
    pub async fn refresh(&self, tenant: &Arc<Tenant>, metric: Metric, priority: Priority) {
        if !tenant.has(metric) || !self.outbound.admits(priority) {
            return;
        }
        let key = self.key(&tenant.id, metric);
        let mut flights = self.flights.lock().await;
        // The gate only when a flight would start: a refresh already running costs nothing.
        if let std::collections::hash_map::Entry::Vacant(slot) = flights.entry(key) {
            let Ok(admitted) = self.outbound.gate(tenant, metric).await else {
                return;
            };
            let flight = self.start_flight(tenant, slot.key(), SystemTime::now(), admitted);
            slot.insert(flight);
        }
    }

    /// Whether the in-flight cap lets work of `priority` start now: the refresher asks before
    /// it takes a tenant from its queue.
    pub fn admits(&self, priority: Priority) -> bool {
        self.outbound.admits(priority)
    }

    /// Whether a fetch of the tenant's `metric` is running now.
    pub async fn is_fetching(&self, tenant: &TenantId, metric: Metric) -> bool {
        self.flights
            .lock()
            .await
            .contains_key(&self.key(tenant, metric))
    }

    /// The outcome of the last fetch of the tenant's `metric`, if any.
    pub fn last_fetch(&self, tenant: &TenantId, metric: Metric) -> Option<LastFetch> {
        self.last_fetch
            .lock()
            .get(&self.key(tenant, metric))
            .cloned()
    }

    /// Drops everything held for tenants that left the registry, for metrics a tenant no
    /// longer has, and for tenant ids that `registry` points at another Entra tenant than
    /// `previous` did (re-pointed: their readings are another customer's). A fetch in flight
    /// for such a key is forgotten too: it still answers the requests waiting for it, but
    /// stores and records nothing (the `flight` module).
    pub async fn retain(&self, registry: &Registry, previous: &Registry) {
        let re_pointed: std::collections::HashSet<&TenantId> = registry
            .all()
            .iter()
            .filter(|tenant| {
                previous
                    .get(tenant.id.as_str())
                    .is_some_and(|before| before.tenant_id != tenant.tenant_id)
            })
            .map(|tenant| &tenant.id)
            .collect();
        let keep = |key: &ScoreKey| {
            !re_pointed.contains(&key.tenant)
                && registry
                    .get(key.tenant.as_str())
                    .is_some_and(|tenant| tenant.has(key.metric))
        };
        // Flights first: a fetch that finishes meanwhile finds itself forgotten and stores
        // nothing, or stored before this and its entry goes below.
        self.flights.lock().await.retain(|key, _| keep(key));
        self.last_fetch.lock().retain(|key, _| keep(key));
        self.entries.retain(registry).await;
        for tenant in re_pointed {
            for metric in Metric::ALL {
                self.entries.remove(&self.key(tenant, metric)).await;
            }
        }
    }

    /// Joins the running fetch or starts one; `Err` when the tenant must not be called now
    /// (cool-down, back-off) and nothing was stored meanwhile.
    async fn flight(
        &self,
        tenant: &Arc<Tenant>,
        key: &ScoreKey,
        asked_at: Instant,
    ) -> Result<Flight, UpstreamError> {
        let mut flights = self.flights.lock().await;
        if let Some((_, flight)) = flights.get(key) {
            return Ok(flight.clone());
        }
        // A fetch may have finished between our cache look-up and taking the lock.
        if let Some(entry) = self.entries.get(key).await {
            if entry.stored_at >= asked_at {
                let entry: Result<Arc<Entry>, ScoreError> = Ok(entry);
                return Ok(futures::future::ready(entry).boxed().shared());
            }
        }
        // The fetch's only gate: its leave goes with the flight, so that a tenant in cool-down or
        // back-off holds no single-flight slot and the stack does not ask again.
        let admitted = match self.outbound.gate(tenant, key.metric).await {
            Ok(admitted) => admitted,
            // Backing off: the failure that started it says more than "backing off".
            Err(gated @ Gated::BackOff(_)) => {
                return Err(match self.last_fetch(&tenant.id, key.metric) {
                    Some(LastFetch {
                        error: Some(error), ..
                    }) => *error,
                    _ => gated.into_error(key.metric.service()),
                })
            }
            Err(gated) => return Err(gated.into_error(key.metric.service())),
        };
        // Since the caller asked: a reading another replica stored after that answers it.
        let since = SystemTime::now()
            .checked_sub(asked_at.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let flight = self.start_flight(tenant, key, since, admitted);
        flights.insert(key.clone(), flight.clone());
        Ok(flight.1)
    }

    /// Spawns the fetch the gate `admitted` on the gateway's runtime; the caller must insert it
    /// into `flights` under the lock it holds.
    fn start_flight(
        &self,
        tenant: &Arc<Tenant>,
        key: &ScoreKey,
        since: SystemTime,
        admitted: Admitted,
    ) -> (u64, Flight) {
        let number = self
            .next_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let injected = self.faults.take(&tenant.id);
        let task = FlightTask {
            started: since,
            number,
            key: key.clone(),
            tenant: tenant.clone(),
            admitted: Mutex::new(Some(admitted)),
            outbound: self.outbound.clone(),
            entries: self.entries.clone(),
            flights: self.flights.clone(),
            last_fetch: self.last_fetch.clone(),
            fresh: self.fresh,
            metrics: self.metrics.clone(),
            observer: self.observer.clone(),
            panic: injected.panic,
            // Made here, not when the task first runs: a task cancelled before it is ever polled
            // must clear its marker too.
            guard: FlightGuard {
                number,
                key: key.clone(),
                flights: self.flights.clone(),
                metrics: self.metrics.clone(),
                runtime: self.runtime.clone(),
                finished: false,
            },
        };
        let handle = self.runtime.spawn(task.run());
        if injected.cancel {
            handle.abort();
        }
        // The task's guard has logged and counted a panic or a cancellation; here it only
        // becomes the answer of the callers waiting for this one fetch.
        let flight = async move {
            match handle.await {
                Ok(result) => result,
                Err(error) if error.is_panic() => Err(ScoreError::Internal),
                Err(_) => Err(ScoreError::ShuttingDown),
            }
        }
        .boxed()
        .shared();
        (number, flight)
    }

    fn served(&self, entry: &Arc<Entry>, source: Source, warning: Option<UpstreamError>) -> Served {
        let age = entry.stored_at.elapsed();
        Served::new(
            entry.clone(),
            source,
            age,
            entry.fresh_for.saturating_sub(age),
            warning,
        )
    }

    /// Stale-if-error: the last good value covers a failure for `stale_if_error`, unless the
    /// caller's `max_age` excludes it.
    fn stale_or(
        &self,
        cached: Option<Arc<Entry>>,
        max_age: Option<Duration>,
        error: UpstreamError,
    ) -> Result<Served, ScoreError> {
        match cached {
            Some(entry)
                if max_age.is_none()
                    && entry.stored_at.elapsed() <= entry.fresh_for + self.stale_if_error =>
            {
                Ok(self.served(&entry, Source::Stale, Some(error)))
            }
            _ => Err(ScoreError::Upstream(error)),
        }
    }

    /// The failure of the last fetch, if it failed after `entry` was stored.
    fn failure_since(&self, key: &ScoreKey, entry: &Entry) -> Option<UpstreamError> {
        let last = self.last_fetch.lock().get(key).cloned()?;
        if last.finished >= entry.stored_at {
            last.error.map(|error| *error)
        } else {
            None
        }
    }
}

mod flight;
mod hooks;
mod settings;
mod store;
#[cfg(test)]
mod tests;
