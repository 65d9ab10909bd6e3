//! The score cache: fresh and stale windows, single-flight loading, stale-while-revalidate and
//! stale-if-error, over one shared moka cache.
//!
//! Owns the decision *whether* Defender is asked: a fresh entry is served as is; an expired one is
//! served at once as `stale` while exactly one refresh runs; a failure never replaces a good value
//! but feeds the tenant's back-off. However many callers ask for a tenant at once, one fetch runs
//! (a spawned task, so that it finishes and fills the cache even when every caller has given up).
//! How a fetch is made belongs to [`crate::upstream`]; the limits to [`crate::quota`].

use crate::config::CacheSettings;
use crate::metrics::{CacheResult, Metrics};
use crate::quota::Quota;
use crate::tenants::{Registry, Tenant, TenantId};
use crate::upstream::{Reading, UpstreamClient, UpstreamError};
use futures::future::{BoxFuture, FutureExt, Shared};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
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
    /// The reading.
    pub reading: Reading,
    /// Where it came from.
    pub source: Source,
    /// How long ago it was fetched.
    pub age: Duration,
    /// How long it stays fresh (zero when stale).
    pub fresh_for: Duration,
    /// Why a stale value is served instead of a new one, when a refresh failed.
    pub warning: Option<UpstreamError>,
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
}

/// The outcome of the last fetch of a tenant, for `/tenants/{id}` and warnings.
#[derive(Debug, Clone)]
pub struct LastFetch {
    /// When it finished.
    pub at: SystemTime,
    /// `None` on success, else the failure.
    pub error: Option<UpstreamError>,
}

/// A cached reading and its freshness, fixed when it was stored.
#[derive(Debug)]
struct Entry {
    reading: Reading,
    stored_at: Instant,
    /// The fresh window of this entry, jittered so that tenants loaded together expire apart.
    fresh_for: Duration,
}

type Flight = Shared<BoxFuture<'static, Result<Arc<Entry>, UpstreamError>>>;

/// The shared score cache and its loaders.
pub struct ScoreCache {
    /// Good readings only; bounded, and dropped once too old even for stale-if-error.
    entries: moka::future::Cache<TenantId, Arc<Entry>>,
    /// Fetches in progress, one per tenant at most (single flight). A tokio mutex, because the
    /// cache is re-checked under it (an await) so that a fetch finishing meanwhile is not repeated.
    flights: Arc<tokio::sync::Mutex<HashMap<TenantId, (u64, Flight)>>>,
    /// Numbers flights, so that a finished fetch removes itself and never a newer one.
    next_flight: std::sync::atomic::AtomicU64,
    /// The last fetch outcome per tenant.
    last_fetch: Arc<Mutex<HashMap<TenantId, LastFetch>>>,
    /// How fetches are made.
    upstream: Arc<UpstreamClient>,
    /// Cool-downs and failure back-off, consulted before starting a fetch.
    quota: Arc<Quota>,
    /// Nominal fresh window.
    fresh: Duration,
    /// How long past freshness a good value may cover for failures.
    stale_if_error: Duration,
    /// Where look-ups, fetches and per-tenant outcomes are recorded.
    metrics: Arc<Metrics>,
}

/// Share of the fresh window removed at random from each entry (0–15 %).
const FRESH_JITTER: f64 = 0.15;

impl ScoreCache {
    /// Creates the cache.
    pub fn new(
        settings: &CacheSettings,
        upstream: Arc<UpstreamClient>,
        quota: Arc<Quota>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let fresh = Duration::from_secs(settings.fresh_seconds);
        let stale_if_error = Duration::from_secs(settings.stale_if_error_seconds);
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_entries)
            .time_to_live(fresh + stale_if_error)
            .build();
        Self {
            entries,
            flights: Arc::default(),
            next_flight: std::sync::atomic::AtomicU64::new(0),
            last_fetch: Arc::default(),
            upstream,
            quota,
            fresh,
            stale_if_error,
            metrics,
        }
    }

    /// The tenant's score. `max_age` bounds the age of what may be served (`0` forces a fetch);
    /// `wait_until` bounds how long this caller waits for a fetch. Counted as a cache hit, a miss
    /// or a stale serve.
    pub async fn get(
        &self,
        tenant: &Arc<Tenant>,
        max_age: Option<Duration>,
        wait_until: Instant,
    ) -> Result<Served, ScoreError> {
        let result = self.lookup(tenant, max_age, wait_until).await;
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

    async fn lookup(
        &self,
        tenant: &Arc<Tenant>,
        max_age: Option<Duration>,
        wait_until: Instant,
    ) -> Result<Served, ScoreError> {
        let asked_at = Instant::now();
        let cached = self.entries.get(&tenant.id).await;
        if let Some(entry) = &cached {
            let age = asked_at.saturating_duration_since(entry.stored_at);
            let allowed = max_age.is_none_or(|max_age| age <= max_age);
            if allowed && age < entry.fresh_for {
                return Ok(self.served(entry, Source::Cache, None));
            }
            if allowed && age <= entry.fresh_for + self.stale_if_error {
                // Stale-while-revalidate: answer now, refresh behind the caller's back.
                self.refresh(tenant).await;
                let warning = self.failure_since(&tenant.id, entry);
                return Ok(self.served(entry, Source::Stale, warning));
            }
        }
        let flight = match self.flight(tenant, asked_at).await {
            Ok(flight) => flight,
            Err(error) => return self.stale_or(cached, max_age, error),
        };
        match tokio::time::timeout_at(wait_until, flight).await {
            Ok(Ok(entry)) => Ok(self.served(&entry, Source::Upstream, None)),
            Ok(Err(error)) => self.stale_or(cached, max_age, error),
            Err(_) => Err(ScoreError::Deadline),
        }
    }

    /// Starts a refresh of the tenant unless one runs already or the tenant must be left alone
    /// (cool-down, failure back-off). Used by stale-while-revalidate and the refresher.
    pub async fn refresh(&self, tenant: &Arc<Tenant>) {
        if self.quota.cool_down_left(&tenant.id).is_some()
            || self.quota.backoff_left(&tenant.id).is_some()
        {
            return;
        }
        let mut flights = self.flights.lock().await;
        if !flights.contains_key(&tenant.id) {
            let flight = self.start_flight(tenant);
            flights.insert(tenant.id.clone(), flight);
        }
    }

    /// Whether a fetch of the tenant is running now.
    pub async fn is_fetching(&self, tenant: &TenantId) -> bool {
        self.flights.lock().await.contains_key(tenant)
    }

    /// The outcome of the tenant's last fetch, if any.
    pub fn last_fetch(&self, tenant: &TenantId) -> Option<LastFetch> {
        lock(&self.last_fetch).get(tenant).cloned()
    }

    /// Drops everything held for tenants that left the registry or whose registration changed.
    pub async fn retain(&self, registry: &Registry) {
        lock(&self.last_fetch).retain(|id, _| registry.get(id.as_str()).is_some());
        self.flights
            .lock()
            .await
            .retain(|id, _| registry.get(id.as_str()).is_some());
        let gone: Vec<TenantId> = self
            .entries
            .iter()
            .map(|(id, _)| (*id).clone())
            .filter(|id| registry.get(id.as_str()).is_none())
            .collect();
        for id in gone {
            self.entries.invalidate(&id).await;
        }
    }

    /// Joins the running fetch or starts one; `Err` when the tenant must not be called now
    /// (cool-down, back-off) and nothing was stored meanwhile.
    async fn flight(
        &self,
        tenant: &Arc<Tenant>,
        asked_at: Instant,
    ) -> Result<Flight, UpstreamError> {
        let mut flights = self.flights.lock().await;
        if let Some((_, flight)) = flights.get(&tenant.id) {
            return Ok(flight.clone());
        }
        // A fetch may have finished between our cache look-up and taking the lock.
        if let Some(entry) = self.entries.get(&tenant.id).await {
            if entry.stored_at >= asked_at {
                let entry: Result<Arc<Entry>, UpstreamError> = Ok(entry);
                return Ok(futures::future::ready(entry).boxed().shared());
            }
        }
        if let Some(retry_after) = self.quota.cool_down_left(&tenant.id) {
            return Err(UpstreamError::Throttled { retry_after });
        }
        if self.quota.backoff_left(&tenant.id).is_some() {
            if let Some(LastFetch {
                error: Some(error), ..
            }) = self.last_fetch(&tenant.id)
            {
                return Err(error);
            }
        }
        let flight = self.start_flight(tenant);
        flights.insert(tenant.id.clone(), flight.clone());
        Ok(flight.1)
    }

    /// Spawns the fetch; the caller must insert it into `flights` under the lock it holds.
    fn start_flight(&self, tenant: &Arc<Tenant>) -> (u64, Flight) {
        let number = self
            .next_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = FlightTask {
            number,
            tenant: tenant.clone(),
            upstream: self.upstream.clone(),
            quota: self.quota.clone(),
            entries: self.entries.clone(),
            flights: self.flights.clone(),
            last_fetch: self.last_fetch.clone(),
            fresh: self.fresh,
            metrics: self.metrics.clone(),
        };
        let handle = tokio::spawn(task.run());
        let flight = async move {
            handle.await.unwrap_or_else(|error| {
                tracing::error!("a score fetch task failed: {error}");
                Err(UpstreamError::Failed {
                    detail: "internal error while fetching".to_owned(),
                })
            })
        }
        .boxed()
        .shared();
        (number, flight)
    }

    fn served(&self, entry: &Entry, source: Source, warning: Option<UpstreamError>) -> Served {
        let age = entry.stored_at.elapsed();
        Served {
            reading: entry.reading.clone(),
            source,
            age,
            fresh_for: entry.fresh_for.saturating_sub(age),
            warning,
        }
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
    fn failure_since(&self, tenant: &TenantId, entry: &Entry) -> Option<UpstreamError> {
        let last = self.last_fetch(tenant)?;
        let stored = entry.reading.fetched_at;
        if last.at >= stored {
            last.error
        } else {
            None
        }
    }
}

/// Everything a spawned fetch needs, owned, so that it outlives every caller.
struct FlightTask {
    number: u64,
    tenant: Arc<Tenant>,
    upstream: Arc<UpstreamClient>,
    quota: Arc<Quota>,
    entries: moka::future::Cache<TenantId, Arc<Entry>>,
    flights: Arc<tokio::sync::Mutex<HashMap<TenantId, (u64, Flight)>>>,
    last_fetch: Arc<Mutex<HashMap<TenantId, LastFetch>>>,
    fresh: Duration,
    metrics: Arc<Metrics>,
}

impl FlightTask {
    async fn run(self) -> Result<Arc<Entry>, UpstreamError> {
        let deadline = self.upstream.deadline();
        let result = self.fetch(deadline).await;
        lock(&self.last_fetch).insert(
            self.tenant.id.clone(),
            LastFetch {
                at: SystemTime::now(),
                error: result.as_ref().err().cloned(),
            },
        );
        // Stored before the flight leaves the map: a caller who finds no flight finds the entry.
        let mut flights = self.flights.lock().await;
        if flights
            .get(&self.tenant.id)
            .is_some_and(|(number, _)| *number == self.number)
        {
            flights.remove(&self.tenant.id);
        }
        result
    }

    async fn fetch(&self, deadline: Instant) -> Result<Arc<Entry>, UpstreamError> {
        let result = self.upstream.fetch_score(&self.tenant, deadline).await;
        match result {
            Ok(reading) => {
                let jitter = rand::rng().random_range(0.0..FRESH_JITTER);
                let entry = Arc::new(Entry {
                    reading,
                    stored_at: Instant::now(),
                    fresh_for: self.fresh.mul_f64(1.0 - jitter),
                });
                self.entries
                    .insert(self.tenant.id.clone(), entry.clone())
                    .await;
                self.quota.record_success(&self.tenant.id);
                self.metrics.fetch("ok");
                self.metrics.tenant_success(
                    &self.tenant.id,
                    entry.reading.score,
                    entry.reading.fetched_at,
                );
                Ok(entry)
            }
            Err(error) => {
                // A 429 has its own cool-down; everything else counts towards the back-off.
                if !matches!(error, UpstreamError::Throttled { .. }) {
                    self.quota.record_failure(&self.tenant.id);
                }
                self.metrics.fetch(error.code());
                self.metrics.tenant_failure(
                    &self.tenant.id,
                    self.quota.consecutive_failures(&self.tenant.id),
                );
                tracing::warn!(tenant = %self.tenant.id, "fetch failed: {error}");
                Err(error)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
