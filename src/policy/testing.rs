//! Test doubles of our own seams, shared by the unit tests of the policies, the cache and the
//! refresher: a scripted [`ScoreSource`], tokens that never leave the process, and an
//! [`Outbound`] stacked over them. Everything waits on tokio's clock, so tests run paused.

use super::{Deadlines, Outbound, Parts, Retries};
use crate::credential::Credential;
use crate::metrics::Metrics;
use crate::quota::{FailureBackoff, LocalQuotaStore, QuotaKey, QuotaStore};
use crate::tenants::{Cloud, QuotaLimits, Registry, Tenant, TenantId};
use crate::token::{BearerToken, TokenError, Tokens};
use crate::upstream::{CallFailure, Metric, Reading, ScoreKey, ScoreSource, UpstreamService};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use url::Url;

/// A registered tenant with the given id and limits.
pub(crate) fn tenant(id: &str, quota: QuotaLimits) -> Arc<Tenant> {
    Arc::new(registration(id, quota))
}

/// The registration behind [`tenant`], to edit before it is shared.
pub(crate) fn registration(id: &str, quota: QuotaLimits) -> Tenant {
    Tenant {
        id: TenantId::parse(id).expect("a valid id"),
        name: id.to_owned(),
        tenant_id: "8f2c4e1a-1b2c-4d5e-8f90-123456789abc".to_owned(),
        client_id: "11111111-2222-3333-4444-555555555555".to_owned(),
        credential: Credential::Secret(secrecy::SecretString::from("not-a-secret")),
        cloud: Cloud::Custom,
        geo: None,
        authority_host: Url::parse("https://login.example.test")
            .expect("url")
            .into(),
        tags: Vec::new(),
        metrics: vec![Metric::Device],
        endpoints: crate::tenants::test_endpoints(quota, 150, 4),
    }
}

/// Defender's documented limits.
pub(crate) const DEFENDER_LIMITS: QuotaLimits = QuotaLimits {
    per_minute: 100,
    per_hour: 1500,
};

/// A registry of tenants named `tenant-0` … with Defender's limits.
pub(crate) fn registry(count: usize) -> Arc<Registry> {
    Arc::new(Registry::new(
        (0..count)
            .map(|i| registration(&format!("tenant-{i}"), DEFENDER_LIMITS))
            .collect(),
    ))
}

/// One scripted answer of the fake source.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// A reading with this score.
    Score(f64),
    /// A failure.
    Fail(CallFailure),
}

impl Answer {
    /// A refusal with this status, `Retry-After` and detail.
    pub(crate) fn status(status: u16, retry_after: Option<Duration>, detail: &str) -> Self {
        Self::Fail(CallFailure::Status {
            status,
            retry_after,
            detail: detail.to_owned(),
        })
    }
}

/// A source that answers from a script per tenant (then a default), after a latency on tokio's
/// clock, and counts calls and calls at once.
pub(crate) struct FakeSource {
    metric: Metric,
    scripts: Mutex<HashMap<String, VecDeque<Answer>>>,
    default: Mutex<Answer>,
    latency: Duration,
    calls: Mutex<HashMap<String, usize>>,
    call_times: Mutex<Vec<(String, tokio::time::Instant)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl FakeSource {
    /// Answers `score` to everyone after `latency`.
    pub(crate) fn new(score: f64, latency: Duration) -> Arc<Self> {
        Self::for_metric(Metric::Device, score, latency)
    }

    /// Reads `metric` (and spends its service's quota), answering `score` after `latency`.
    pub(crate) fn for_metric(metric: Metric, score: f64, latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            metric,
            scripts: Mutex::default(),
            default: Mutex::new(Answer::Score(score)),
            latency,
            calls: Mutex::default(),
            call_times: Mutex::default(),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        })
    }

    /// The next answers to `tenant`, before the default.
    pub(crate) fn script(&self, tenant: &str, answers: impl IntoIterator<Item = Answer>) {
        self.scripts
            .lock()
            .entry(tenant.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Changes the answer of every unscripted call.
    pub(crate) fn answer(&self, answer: Answer) {
        *self.default.lock() = answer;
    }

    /// Calls made for `tenant`.
    pub(crate) fn calls(&self, tenant: &str) -> usize {
        self.calls.lock().get(tenant).copied().unwrap_or(0)
    }

    /// Calls made in all.
    pub(crate) fn total_calls(&self) -> usize {
        self.calls.lock().values().sum()
    }

    /// Every call, in order: the tenant and when it started.
    pub(crate) fn call_times(&self) -> Vec<(String, tokio::time::Instant)> {
        self.call_times.lock().clone()
    }

    /// Most calls that ran at once.
    pub(crate) fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl ScoreSource for FakeSource {
    fn metric(&self) -> Metric {
        self.metric
    }

    fn service(&self) -> UpstreamService {
        self.metric.service()
    }

    async fn call(&self, tenant: &Tenant, _token: &BearerToken) -> Result<Reading, CallFailure> {
        let id = tenant.id.as_str().to_owned();
        *self.calls.lock().entry(id.clone()).or_default() += 1;
        self.call_times
            .lock()
            .push((id.clone(), tokio::time::Instant::now()));
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        // Decremented however the call ends (a timeout drops this future).
        struct Running<'a>(&'a AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _running = Running(&self.running);
        let answer = self
            .scripts
            .lock()
            .get_mut(&id)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| self.default.lock().clone());
        tokio::time::sleep(self.latency).await;
        match answer {
            Answer::Score(score) => Ok(Reading {
                score,
                time: "2024-05-01T00:00:00Z".to_owned(),
                fetched_at: SystemTime::now(),
                secure: None,
            }),
            Answer::Fail(failure) => Err(failure),
        }
    }
}

/// Tokens that are always there (or always refused), counting renewals.
#[derive(Default)]
pub(crate) struct FakeTokens {
    /// Renewals asked for.
    pub(crate) renewals: AtomicUsize,
    /// When set, every token request is rejected with this detail.
    pub(crate) reject: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Tokens for FakeTokens {
    async fn token(
        &self,
        _tenant: &Arc<Tenant>,
        _scope: &Arc<str>,
    ) -> Result<BearerToken, TokenError> {
        match self.reject.lock().clone() {
            Some(detail) => Err(TokenError::Rejected {
                status: 401,
                codes: "AADSTS7000215".to_owned(),
                detail,
            }),
            None => Ok(BearerToken::for_tests("fake-token")),
        }
    }

    fn renew(&self, _tenant: &TenantId) {
        self.renewals.fetch_add(1, Ordering::SeqCst);
    }

    fn retain(&self, _registry: &Registry) {}
}

/// The retry policy of the tests: two retries, pauses of up to 100 ms then 200 ms.
pub(crate) const RETRIES: Retries = Retries {
    max_retries: 2,
    base: Duration::from_millis(100),
    max: Duration::from_millis(1000),
};

/// The stack over `source` and `tokens`, with `max_in_flight` slots, a 10 s fetch deadline and
/// 5 s attempts.
pub(crate) fn outbound(
    source: Arc<FakeSource>,
    tokens: Arc<FakeTokens>,
    max_in_flight: usize,
) -> Arc<Outbound> {
    outbound_over(vec![source], tokens, max_in_flight)
}

/// The stack over several sources (one per metric), as [`outbound`] otherwise.
pub(crate) fn outbound_over(
    sources: Vec<Arc<FakeSource>>,
    tokens: Arc<FakeTokens>,
    max_in_flight: usize,
) -> Arc<Outbound> {
    outbound_with_store(
        sources,
        tokens,
        max_in_flight,
        Arc::new(LocalQuotaStore::default()),
    )
}

/// The stack over `store`, as [`outbound_over`] otherwise.
pub(crate) fn outbound_with_store(
    sources: Vec<Arc<FakeSource>>,
    tokens: Arc<FakeTokens>,
    max_in_flight: usize,
    store: Arc<dyn QuotaStore>,
) -> Arc<Outbound> {
    Arc::new(Outbound::new(Parts {
        sources: sources
            .into_iter()
            .map(|source| source as Arc<dyn ScoreSource>)
            .collect(),
        tokens,
        store,
        retries: RETRIES,
        max_in_flight,
        deadlines: Deadlines {
            fetch: Duration::from_secs(10),
            attempt: Duration::from_secs(5),
        },
        backoff: FailureBackoff::default(),
        metrics: Arc::new(Metrics::default()),
    }))
}

/// The in-process quota store, counting the look-ups the gate makes (a cool-down and a
/// back-off per evaluation: two Redis round trips in a cluster).
#[derive(Default)]
pub(crate) struct CountingQuotaStore {
    inner: LocalQuotaStore,
    /// `cool_down_left` calls: one per gate evaluation.
    pub(crate) cool_down_lookups: AtomicUsize,
    /// `backoff_left` calls: one per gate evaluation that found no cool-down.
    pub(crate) backoff_lookups: AtomicUsize,
}

impl CountingQuotaStore {
    /// Gate evaluations so far.
    pub(crate) fn gate_evaluations(&self) -> usize {
        self.cool_down_lookups.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl QuotaStore for CountingQuotaStore {
    async fn charge(&self, key: &QuotaKey, limits: QuotaLimits) -> Result<(), Duration> {
        self.inner.charge(key, limits).await
    }
    async fn cool_down(&self, key: &QuotaKey, duration: Duration) {
        self.inner.cool_down(key, duration).await
    }
    async fn cool_down_left(&self, key: &QuotaKey) -> Option<Duration> {
        self.cool_down_lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.cool_down_left(key).await
    }
    fn cooling_down(&self) -> usize {
        self.inner.cooling_down()
    }
    async fn record_failure(&self, key: &ScoreKey, backoff: &FailureBackoff) -> u32 {
        self.inner.record_failure(key, backoff).await
    }
    async fn record_success(&self, key: &ScoreKey) {
        self.inner.record_success(key).await
    }
    async fn backoff_left(&self, key: &ScoreKey) -> Option<Duration> {
        self.backoff_lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.backoff_left(key).await
    }
    async fn consecutive_failures(&self, key: &ScoreKey) -> u32 {
        self.inner.consecutive_failures(key).await
    }
    async fn retain(&self, registry: &Registry) {
        self.inner.retain(registry).await
    }
}
