//! The gateway's shared services, built once and shared by every HTTP worker and the refresher,
//! and the logic behind each route (handlers stay thin and testable without HTTP).
//!
//! Owns which tenants exist right now (the registry can be swapped on reload) and the one
//! function per use case the API calls. It knows nothing of HTTP.

use crate::auth::{KeyRing, Scope};
use crate::cache::{ScoreCache, ScoreError, Served};
use crate::config::Config;
use crate::fanout::CursorCodec;
use crate::metrics::Metrics;
use crate::quota::{FailureBackoff, Quota};
use crate::tenants::{Registry, Tenant};
use crate::token::TokenSource;
use crate::upstream::{self, UpstreamClient};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

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

/// Everything a request needs, built once per process.
pub struct Services {
    /// The registrations in force; replaced whole on reload, never edited in place.
    registry: RwLock<Arc<Registry>>,
    /// The score cache and its loaders (single flight, stale windows).
    pub cache: Arc<ScoreCache>,
    /// Outbound limits, shared with the cache and the upstream client.
    pub quota: Arc<Quota>,
    /// The Prometheus registry every component records into; served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The upstream client, kept for reload housekeeping (its token source).
    upstream: Arc<UpstreamClient>,
    /// The callers' keys; `None` when authentication is off. Swapped whole on reload.
    keys: RwLock<Option<Arc<KeyRing>>>,
    /// Longest a request may take.
    request_timeout: Duration,
    /// Set once the listener is up: `/readyz` reports it.
    ready: AtomicBool,
    /// How long an interactive request waits for a fetch.
    request_wait: Duration,
    /// Seals `/scores` cursors; its key is fixed for the process (a reload keeps it).
    pub cursors: Arc<CursorCodec>,
    /// The score history; `None` when `[history] enabled = false`. Started without waiting for
    /// the database, which is connected in the background.
    history: Option<Arc<crate::history::History>>,
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
        let http = upstream::http_client(&config.upstream, config.extra_ca_pem.as_deref())
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot build the HTTPS client: {}",
                    crate::telemetry::error_chain(&error)
                )
            })?;
        let metrics = Arc::new(Metrics::new());
        let quota = Arc::new(Quota::new(
            config.upstream.max_in_flight,
            FailureBackoff::default(),
            metrics.clone(),
        ));
        let tokens = TokenSource::new(http.clone());
        let upstream = Arc::new(UpstreamClient::new(
            http,
            tokens,
            quota.clone(),
            config.upstream.clone(),
            metrics.clone(),
        ));
        let history = config.history.enabled.then(|| {
            Arc::new(crate::history::History::start(
                &config.history,
                metrics.history.clone(),
                &runtime,
            ))
        });
        let cache = Arc::new(ScoreCache::new(
            &config.cache,
            upstream.clone(),
            quota.clone(),
            metrics.clone(),
            runtime,
        ));
        let cursors = match &config.cursor_key {
            Some(secret) => CursorCodec::from_secret(secret.expose_secret().as_bytes()),
            None => {
                tracing::info!(
                    "server.cursor_key is not set: /scores cursors use a random key of this process, \
                     so they do not survive a restart nor work on another replica"
                );
                CursorCodec::random()
            }
        };
        Ok(Arc::new(Self {
            cursors: Arc::new(cursors),
            registry: RwLock::new(config.registry.clone()),
            cache,
            quota,
            metrics,
            upstream,
            keys: RwLock::new(config.auth.enabled.then(|| config.keys.clone())),
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            ready: AtomicBool::new(false),
            // A little longer than one fetch's own deadline, so the fetch reports its own timeout.
            request_wait: Duration::from_millis(config.upstream.timeout_ms + 500),
            history,
        }))
    }

    /// The score history, or `None` when it is turned off.
    pub fn history(&self) -> Option<&Arc<crate::history::History>> {
        self.history.as_ref()
    }

    /// The registrations in force now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
        let old = std::mem::replace(
            &mut *self
                .registry
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            new.clone(),
        );
        // Keys are swapped with the registry: a key's scope may name tenants only now added.
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            config.auth.enabled.then(|| config.keys.clone());
        self.cache.retain(&new).await;
        self.quota.retain(&new);
        self.upstream.tokens().retain(&new);
        self.metrics.retain_tenants(&new);
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
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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

    /// The score of one tenant `scope` may see, no older than `max_age` when given.
    pub async fn score(
        &self,
        id: &str,
        scope: &Scope,
        max_age: Option<Duration>,
    ) -> Result<(Arc<Tenant>, Served), ServiceError> {
        let tenant = self.tenant(id, scope)?;
        let served = self
            .cache
            .get(
                &tenant,
                max_age,
                crate::quota::instant_after(Instant::now(), self.request_wait),
            )
            .await?;
        Ok((tenant, served))
    }
}
