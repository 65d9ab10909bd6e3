//! The gateway's shared services, built once and shared by every HTTP worker and the refresher,
//! and the logic behind each route (handlers stay thin and testable without HTTP).
//!
//! Owns which tenants exist right now (the registry can be swapped on reload) and the one
//! function per use case the API calls. It knows nothing of HTTP.

use crate::auth::entra::EntraVerifier;
use crate::auth::{KeyRing, Scope};
use crate::cache::LastFetch;
use crate::cache::{ScoreCache, ScoreError, Served};
use crate::config::Config;
use crate::fanout::CursorCodec;
use crate::fanout::{Page, Query};
use crate::metrics::Metrics;
use crate::policy::{Deadlines, Outbound, Parts, Retries};
use crate::quota::{FailureBackoff, LocalQuotaStore};
use crate::tenant_controls::ControlBook;
use crate::tenants::{Registry, Tenant, TenantId};
use crate::token::TokenSource;
use crate::upstream::{self, Metric};
use parking_lot::RwLock;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod control_record;
mod controls;
mod record;

use record::Recorder;

/// Why a use case could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// No such tenant (or one the caller may not see: the two are indistinguishable).
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    /// The score could not be served.
    #[error(transparent)]
    Score(#[from] ScoreError),
}

/// What a reload changed, for the log line that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Tenants registered after the reload.
    pub tenants: usize,
    /// Tenants that were not registered before.
    pub added: usize,
    /// Tenants that are no longer registered.
    pub removed: usize,
}

/// Each registered tenant's id and the Entra tenant it stands for (the history keys its series by
/// both).
fn bindings(registry: &Registry) -> Vec<crate::history::Binding> {
    registry
        .all()
        .iter()
        .map(|tenant| (tenant.id.to_string(), tenant.tenant_id.clone()))
        .collect()
}

/// The Entra verifier of `config` (authentication on and `[auth.entra]` set).
fn entra_verifier(
    config: &Config,
    http: &reqwest::Client,
    previous: Option<&EntraVerifier>,
) -> Option<Arc<EntraVerifier>> {
    let entra = config.entra.as_ref().filter(|_| config.auth.enabled)?;
    Some(Arc::new(EntraVerifier::new(
        entra.clone(),
        http.clone(),
        previous,
    )))
}

/// Everything a request needs, built once per process.
pub struct Services {
    /// The registrations in force; replaced whole on reload, never edited in place.
    registry: RwLock<Arc<Registry>>,
    /// The score cache and its loaders (single flight, stale windows).
    cache: Arc<ScoreCache>,
    /// The outbound policy stack the cache fetches through (shared with it): reload housekeeping
    /// and the live values of `/metrics`.
    outbound: Arc<Outbound>,
    /// The Prometheus registry every component records into; served at `/metrics`.
    metrics: Arc<Metrics>,
    /// The callers' keys; `None` when authentication is off. Swapped whole on reload.
    keys: RwLock<Option<Arc<KeyRing>>>,
    /// Entra ID callers (`[auth.entra]`); `None` when not configured or authentication is off.
    /// Swapped with the keys on reload, keeping the cached signing keys of the same issuer.
    entra: RwLock<Option<Arc<EntraVerifier>>>,
    /// The client the Entra signing keys are fetched with (kept for reloads).
    entra_http: reqwest::Client,
    /// Longest a request may take.
    request_timeout: Duration,
    /// Set once the listener is up: `/readyz` reports it.
    ready: AtomicBool,
    /// How long an interactive request waits for a fetch.
    request_wait: Duration,
    /// Seals every cursor (`/scores`, `/alerts/events`, `/webhooks/deliveries`); its key is
    /// fixed for the process (a reload keeps it).
    cursors: Arc<CursorCodec>,
    /// The score history; `None` when `[history] enabled = false`. Started without waiting for
    /// the database, which is connected in the background.
    history: Option<Arc<crate::history::History>>,
    /// Alert rules and webhook delivery; `None` when history is off (their state lives there).
    alerts: Option<Arc<crate::alerts::Alerts>>,
    /// The Redis the replicas share (`[cluster]`): refresher leases and per-key limits ask it
    /// directly; cache and quota reach it through their stores.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Each tenant's controls: profiles and the newest snapshot joined (the `secure` source's
    /// sink).
    controls: Arc<ControlBook>,
    /// How many tenants the `/scores` answers being built hold at once: bounds their memory
    /// under many concurrent callers.
    answers: crate::fanout::AnswerBudget,
    /// The gateway's main runtime (not an HTTP worker's): history reads run there.
    runtime: tokio::runtime::Handle,
}

impl Services {
    /// Builds the shared services from a validated configuration. Must be called on the runtime
    /// that outlives the HTTP workers (the one `serve` runs on): score fetches run there.
    pub fn build(config: &Config) -> anyhow::Result<Arc<Self>> {
        // Captured here, not looked up per fetch: a fetch started from an HTTP worker must not
        // die with that worker's runtime at shutdown while other workers' requests wait for it.
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            anyhow::anyhow!("the services must be built inside the gateway's runtime: {error}")
        })?;
        let cannot_build = |error: reqwest::Error| {
            anyhow::anyhow!(
                "cannot build the HTTPS client: {}",
                crate::telemetry::error_chain(&error)
            )
        };
        let http = upstream::http_client(&config.upstream, config.extra_ca_pem.as_deref())
            .map_err(cannot_build)?;
        // Webhooks: the same TLS roots and user agent, no redirects followed.
        let webhook_http = crate::alerts::WebhookClients::build(|| {
            upstream::webhook_client(&config.upstream, config.extra_ca_pem.as_deref())
        })
        .map_err(cannot_build)?;
        let mut metrics = Metrics::new();
        if config.cluster.is_some() {
            metrics.register_cluster();
        }
        let metrics = Arc::new(metrics);
        let cluster = match &config.cluster {
            Some(cluster) => {
                tracing::info!(
                    redis = %cluster.redacted_url(),
                    replicas = cluster.replicas,
                    "cluster mode: cache, quota, single flight and refreshes shared through Redis"
                );
                let connected = crate::cluster::Cluster::connect(
                    cluster,
                    metrics.cluster.clone(),
                    runtime.clone(),
                )
                .map_err(|error| anyhow::anyhow!("cluster.redis_url: {error}"))?;
                Some(connected)
            }
            None => None,
        };
        let quota: Arc<dyn crate::quota::QuotaStore> = match &cluster {
            Some(cluster) => Arc::new(crate::cluster::quota::RedisQuotaStore::new(cluster.clone())),
            None => Arc::new(LocalQuotaStore::default()),
        };
        let settings = &config.upstream;
        let transport = crate::upstream::Transport {
            http: http.clone(),
            max_body_bytes: settings.max_body_bytes,
        };
        let controls = ControlBook::new(
            Duration::from_secs(settings.control_profiles_refresh_hours.saturating_mul(3600)),
            Duration::from_millis(config.cache.min_forced_interval_ms),
            config.registry.clone(),
            runtime.clone(),
        );
        let outbound = Arc::new(Outbound::new(Parts {
            sources: upstream::sources::all_with_sink(&transport, Some(controls.sink())),
            tokens: Arc::new(TokenSource::new(http.clone())),
            store: quota,
            retries: Retries::of(settings),
            max_in_flight: settings.max_in_flight,
            deadlines: Deadlines::of(settings),
            backoff: FailureBackoff::default(),
            metrics: metrics.clone(),
        }));
        controls.connect(&outbound);
        let history = config.history.enabled.then(|| {
            Arc::new(crate::history::History::start_for_tenants(
                &config.history,
                metrics.history.clone(),
                &runtime,
                bindings(&config.registry),
            ))
        });
        if let Some(history) = &history {
            // The changes of `/scores` in memory before the first requests need them.
            let tenants = config.registry.all().iter().map(|t| t.id.clone());
            history.load_past(tenants.collect(), &runtime);
        }
        let alerts = history.as_ref().map(|history| {
            Arc::new(crate::alerts::Alerts::start(
                config.alerts.clone(),
                history.clone(),
                webhook_http,
                metrics.alerts.clone(),
                &runtime,
            ))
        });
        let mut cache = match &cluster {
            Some(cluster) => {
                let window = Duration::from_secs(
                    config.cache.fresh_seconds + config.cache.stale_if_error_seconds,
                );
                let store = crate::cluster::store::TieredStore::new(
                    cluster.clone(),
                    &config.registry,
                    config.cache.max_entries,
                    window,
                );
                ScoreCache::with_store(
                    &config.cache,
                    Arc::new(store),
                    outbound.clone(),
                    metrics.clone(),
                    runtime.clone(),
                )
            }
            None => ScoreCache::new(
                &config.cache,
                outbound.clone(),
                metrics.clone(),
                runtime.clone(),
            ),
        };
        if let Some(history) = &history {
            if config.history.controls {
                controls.observe(Arc::new(control_record::ControlRecorder::new(
                    history.clone(),
                    alerts.clone(),
                    runtime.clone(),
                )));
            }
            let mut recorder = Recorder::new(
                history.clone(),
                alerts.clone(),
                outbound.clone(),
                runtime.clone(),
            );
            if config.history.controls {
                recorder = recorder.with_controls(controls.clone());
            }
            cache = cache.with_observer(Arc::new(recorder));
        }
        let cache = Arc::new(cache);
        let cursors = match &config.cursor_key {
            Some(secret) => CursorCodec::from_secret(secret.expose_secret().as_bytes()),
            None => {
                tracing::info!(
                    "server.cursor_key is not set: cursors use a random key of this process, \
                     so they do not survive a restart nor work on another replica"
                );
                CursorCodec::random()
            }
        };
        Ok(Arc::new(Self {
            controls,
            cursors: Arc::new(cursors),
            registry: RwLock::new(config.registry.clone()),
            cache,
            outbound,
            metrics,
            keys: RwLock::new(config.auth.enabled.then(|| config.keys.clone())),
            entra: RwLock::new(entra_verifier(config, &http, None)),
            entra_http: http,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            ready: AtomicBool::new(false),
            // A little longer than one fetch's own deadline, so the fetch reports its own timeout.
            request_wait: Duration::from_millis(config.upstream.timeout_ms + 500),
            history,
            alerts,
            cluster,
            answers: crate::fanout::AnswerBudget::default(),
            runtime: runtime.clone(),
        }))
    }

    /// Alerts, or `None` when history (which holds their state) is turned off. The fetch path
    /// reports to it: [`crate::alerts::Alerts::on_reading`] and `on_failure`.
    pub fn alerts(&self) -> Option<&Arc<crate::alerts::Alerts>> {
        self.alerts.as_ref()
    }

    /// The Redis shared by the replicas, or `None` for a single process.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The score history, or `None` when it is turned off.
    pub fn history(&self) -> Option<&Arc<crate::history::History>> {
        self.history.as_ref()
    }

    /// Runs a history read on the gateway's main runtime rather than on the HTTP worker that
    /// asked: SQLite's driver hands each row over as a message, and on a busy worker every
    /// message waited behind the worker's other requests (a mixed load of 200 clients: 36
    /// history reads a second, holding the read permits ~55 ms each, most others refused as
    /// busy). `None` when the read failed inside the gateway (a panic).
    pub async fn on_main_runtime<T: Send + 'static>(
        &self,
        read: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.runtime.spawn(read).await.ok()
    }

    /// The registrations in force now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }

    /// Swaps in the registrations of a reloaded, validated configuration, then drops everything
    /// held for tenants that left or changed: cached scores and fetch outcomes, limiters,
    /// cool-downs and back-off, credentials and their tokens, per-tenant metric series.
    ///
    /// The swap is one pointer replacement: a request sees the old or the new registry, never a
    /// mix, and requests in flight finish with the registration they started with. Settings
    /// outside the registry (listener, upstream client, cache sizes) keep their start-up values.
    pub async fn reload(&self, config: &Config) -> ReloadSummary {
        let new = config.registry.clone();
        // Before the swap: a tenant id re-pointed at another Entra tenant starts a new series
        // before the new customer's first reading or back-fill.
        if let Some(history) = &self.history {
            history.bind_tenants(bindings(&new)).await;
        }
        let old = std::mem::replace(&mut *self.registry.write(), new.clone());
        // Keys are swapped with the registry: a key's scope may name tenants only now added.
        *self.keys.write() = config.auth.enabled.then(|| config.keys.clone());
        let previous = self.entra.read().clone();
        *self.entra.write() = entra_verifier(config, &self.entra_http, previous.as_deref());
        self.cache.retain(&new, &old).await;
        self.outbound.retain(&new).await;
        self.controls.retain(&new);
        self.metrics.retain_tenants(&new);
        if let Some(alerts) = &self.alerts {
            alerts.reload(config.alerts.clone());
        }
        ReloadSummary {
            tenants: new.len(),
            added: new
                .all()
                .iter()
                .filter(|tenant| old.get(tenant.id.as_str()).is_none())
                .count(),
            removed: old
                .all()
                .iter()
                .filter(|tenant| new.get(tenant.id.as_str()).is_none())
                .count(),
        }
    }

    /// Marks the gateway ready (listener up).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the gateway is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The callers' keys, or `None` when authentication is off.
    pub fn keys(&self) -> Option<Arc<KeyRing>> {
        self.keys.read().clone()
    }

    /// The Entra ID verifier, or `None` when Entra callers are not configured (or authentication
    /// is off).
    pub fn entra(&self) -> Option<Arc<EntraVerifier>> {
        self.entra.read().clone()
    }

    /// Longest a request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The tenants `scope` may see, sorted by id.
    pub fn tenants(&self, scope: &Scope) -> Vec<Arc<Tenant>> {
        self.registry()
            .all()
            .iter()
            .filter(|tenant| scope.allows(tenant))
            .cloned()
            .collect()
    }

    /// The tenant with this id, if `scope` may see it; a tenant outside the scope is unknown,
    /// exactly as one that does not exist.
    pub fn tenant(&self, id: &str, scope: &Scope) -> Result<Arc<Tenant>, ServiceError> {
        self.registry()
            .get(id)
            .filter(|tenant| scope.allows(tenant))
            .cloned()
            .ok_or_else(|| ServiceError::UnknownTenant(id.to_owned()))
    }

    /// The `metric` of one tenant `scope` may see when a fresh one is at hand (no waiting, no
    /// future): `Ok(None)` means "ask [`Services::score`]". The warm single-tenant route answers
    /// through this without the request timeout's timer.
    pub fn score_now(
        &self,
        id: &str,
        metric: Metric,
        scope: &Scope,
        max_age: Option<Duration>,
    ) -> Result<Option<(Arc<Tenant>, Served)>, ServiceError> {
        let tenant = self.tenant(id, scope)?;
        Ok(self
            .cache
            .get_fresh_now(&tenant, metric, max_age, Instant::now())
            .map(|served| (tenant, served)))
    }

    /// The `metric` of one tenant `scope` may see, no older than `max_age` when given.
    pub async fn score(
        &self,
        id: &str,
        metric: Metric,
        scope: &Scope,
        max_age: Option<Duration>,
    ) -> Result<(Arc<Tenant>, Served), ServiceError> {
        let tenant = self.tenant(id, scope)?;
        // A fresh score at hand needs no future: the warm path portals poll.
        if let Some(served) = self
            .cache
            .get_fresh_now(&tenant, metric, max_age, Instant::now())
        {
            return Ok((tenant, served));
        }
        let served = self
            .cache
            .get(
                &tenant,
                metric,
                max_age,
                crate::quota::instant_after(Instant::now(), self.request_wait),
            )
            .await?;
        Ok((tenant, served))
    }

    /// The `/scores` page of the tenants in `registry` that `visible` lets the caller see.
    pub async fn scores(
        &self,
        registry: &Registry,
        visible: impl Fn(&Tenant) -> bool,
        query: &Query,
    ) -> Page {
        crate::fanout::scores(
            &self.cache,
            self.history.as_ref(),
            &self.answers,
            registry,
            visible,
            query,
        )
        .await
    }

    /// The outcome of the last fetch of the tenant's `metric`, if any.
    pub fn last_fetch(&self, tenant: &TenantId, metric: Metric) -> Option<LastFetch> {
        self.cache.last_fetch(tenant, metric)
    }

    /// Whether a fetch of the tenant's `metric` is running now.
    pub async fn is_fetching(&self, tenant: &TenantId, metric: Metric) -> bool {
        self.cache.is_fetching(tenant, metric).await
    }

    /// Callers waiting now for the running fetch of the tenant's `metric` (a test hook).
    #[cfg(feature = "test-hooks")]
    pub async fn flight_waiters(&self, tenant: &TenantId, metric: Metric) -> usize {
        self.cache.flight_waiters(tenant, metric).await
    }

    /// Makes the next fetch of `tenant` fail with `fault` (a test hook): it proves that one
    /// broken fetch never wedges a tenant.
    #[cfg(feature = "test-hooks")]
    pub fn inject_fault(&self, tenant: &TenantId, fault: crate::cache::InjectedFault) {
        self.cache.inject_fault(tenant, fault);
    }

    /// The score cache, for the refresher (which starts refreshes through it).
    pub(crate) fn cache(&self) -> &Arc<ScoreCache> {
        &self.cache
    }

    /// Upstream calls in flight now.
    pub fn upstream_in_flight(&self) -> usize {
        self.outbound.in_flight_cap().in_flight()
    }

    /// Tenants in a cool-down a source imposed (429) now.
    pub fn tenants_cooling_down(&self) -> usize {
        self.outbound.tenants_cooling_down()
    }

    /// The Prometheus registry every component records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The codec that seals every cursor.
    pub fn cursors(&self) -> Arc<CursorCodec> {
        self.cursors.clone()
    }

    /// Each tenant's controls (profiles and the joined newest snapshot): where a
    /// [`crate::tenant_controls::ControlsObserver`] is set.
    pub fn control_book(&self) -> &Arc<ControlBook> {
        &self.controls
    }
}
