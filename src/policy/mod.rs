//! The outbound policy stack: every limit, retry and cool-down between the cache and a source, as
//! small types composed once, in one order, by [`Outbound::fetch`].
//!
//! # The order, and why
//!
//! 0. **Forced-fetch floor** ([`ForcedFetchFloor`]): a caller's `max_age` below `[cache]
//!    min_forced_interval_ms` is raised to it, so a reading that recent answers `max_age=0`.
//!    Applied by the cache, which holds the readings it compares with, before any flight: a
//!    caller looping on forced fetches spends no quota.
//! 1. **Gate** ([`Gate`]): a tenant in a cool-down its source imposed (429 `Retry-After`) or in
//!    failure back-off is not called at all. First, because it is the cheapest refusal and costs
//!    nothing (no quota, no slot, no token). Asked **once per fetch**: the cache asks it before
//!    it gives a fetch a single-flight slot (a gated tenant holds none) and hands the gate's
//!    leave ([`Admitted`]) to the fetch ([`Outbound::fetch_admitted`]); [`Outbound::fetch`] asks
//!    it itself. In a cluster an evaluation is two Redis round trips.
//! 2. **Retries** ([`Retries`]): each attempt below runs again after a full-jitter exponential
//!    pause when [`classify`] says the failure is transient, within the fetch's deadline. Around
//!    the per-call layers, because each attempt must pay for itself:
//!    1. **Quota** ([`RateLimit`]): one charge to the tenant's minute and hour windows per attempt
//!       — Microsoft counts every HTTP call, retries included. Waits within the deadline when a
//!       window is spent. Before the slot, so that a tenant waiting for its window holds no slot
//!       that other tenants could use. How the windows count is the quota stores' business
//!       ([`crate::quota`]); while Redis is away a replica spends only its share of the limits
//!       ([`crate::quota::ReplicaShareWhenRedisDown`]).
//!    2. **Tenant slots** ([`TenantSlots`]): the upstream service's own cap on one tenant's calls
//!       at once (Graph: 4 per app and tenant; Defender has none). After the quota for the same
//!       reason as the global cap, before it so that a tenant waiting for its own slot holds
//!       none of the global ones.
//!    3. **In-flight cap** ([`InFlightCap`]): a global cap on calls at once; our sockets and
//!       Microsoft's services are finite. Held for the token and the call, so that it also bounds
//!       token requests at once (a cold start of a thousand tenants does not open a thousand
//!       connections to Entra ID at the same instant). It also decides when background work may
//!       start ([`Priority::Background`], the refresher's): only while more than half its slots
//!       are free, so interactive requests never queue behind it.
//!    4. **Token** ([`Tokens`]): a bearer token for the source's scope (usually a cache hit).
//!       After the quota, so a token failure costs a quota unit: tokens are fetched per attempt,
//!       and bounding Entra requests by the cap matters more than that unit.
//!    5. **Call** ([`ScoreSource::call`]): bounded by the attempt timeout, never past the fetch's
//!       deadline.
//!
//! Classification is a pure function, [`classify`]: it maps an attempt's outcome to a
//! [`Decision`] (done, retry, renew the token once, fail, cool down for a while) and touches
//! nothing. Only [`Outbound`] applies the effects of decisions on shared state, in one place: a
//! cool-down on `CoolDown`, and after the fetch, back-off on failure and its end on success.
//!
//! One stack serves every source ([`Metric`]): rate windows, cool-downs and tenant slots are
//! keyed by tenant and upstream service (`device` and `exposure` share Defender's), failure
//! back-off by tenant and metric. A source answering 404 or 410 is `upstream_gone`: not retried,
//! and backed off for [`GONE_BACKOFF`] rather than the short exponential pause.
//!
//! The state these policies consult lives behind [`QuotaStore`] (in process, or in Redis for
//! several replicas: [`crate::cluster::quota::RedisQuotaStore`]); the in-flight cap and tenant
//! slots stay per process.

mod classify;
mod floor;
mod layers;

pub use classify::{classify, Decision, Failure, DEFAULT_RETRY_AFTER};
pub use floor::ForcedFetchFloor;
pub use layers::{Admitted, Gated, InFlightCap, Priority, Retries};

use classify::call_outcome;
use layers::{Gate, RateLimit, TenantSlots};

use crate::controls::graph::{ControlProfile, ControlProfilesPage};
use crate::metrics::Metrics;
use crate::quota::{instant_after, FailureBackoff, QuotaKey, QuotaStore};
use crate::tenants::{Registry, Tenant};
use crate::token::{TokenError, Tokens};
use crate::upstream::{
    CallFailure, DailyPage, DailyReadings, Metric, Reading, ScoreKey, ScoreSource, UpstreamError,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a tenant's metric whose endpoint answered 404 or 410 is left alone: a retired API
/// does not come back within minutes, and asking every few seconds would only fill logs.
pub const GONE_BACKOFF: FailureBackoff = FailureBackoff {
    base: Duration::from_secs(3600),
    max: Duration::from_secs(3600),
};

/// Most pages of control profiles followed for one tenant: Graph's catalogue of a few hundred
/// controls fits a handful; a chain of links longer than this is a loop, not a catalogue.
pub const MAX_PROFILE_PAGES: usize = 20;

/// Most days one page of a daily history asks for (Graph's `$top`); see
/// [`Outbound::fetch_daily`].
pub const DAILY_PAGE_DAYS: u32 = 30;

/// Why a fetch produced no reading.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// The gate refused: nothing was attempted and nothing recorded.
    Gated(Gated),
    /// The attempts failed.
    Upstream(UpstreamError),
}

/// Time bounds of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A whole fetch, retries included.
    pub fetch: Duration,
    /// One call.
    pub attempt: Duration,
}

impl Deadlines {
    /// `[upstream]`'s `timeout_ms` and `attempt_timeout_ms`.
    pub fn of(settings: &crate::upstream::UpstreamSettings) -> Self {
        Self {
            fetch: Duration::from_millis(settings.timeout_ms),
            attempt: Duration::from_millis(settings.attempt_timeout_ms),
        }
    }
}

/// The stacked policies in front of one source: the only way the gateway reaches upstream.
pub struct Outbound {
    /// One source per metric.
    sources: HashMap<Metric, Arc<dyn ScoreSource>>,
    tokens: Arc<dyn Tokens>,
    store: Arc<dyn QuotaStore>,
    gate: Gate,
    retries: Retries,
    rate: RateLimit,
    tenant_slots: TenantSlots,
    cap: InFlightCap,
    deadlines: Deadlines,
    /// Back-off of tenants whose fetches keep failing.
    backoff: FailureBackoff,
    metrics: Arc<Metrics>,
}

/// Everything [`Outbound::new`] stacks.
pub struct Parts {
    /// The upstream calls, one per metric (a later one for the same metric replaces an earlier).
    pub sources: Vec<Arc<dyn ScoreSource>>,
    /// Bearer tokens.
    pub tokens: Arc<dyn Tokens>,
    /// Windows, cool-downs and back-off.
    pub store: Arc<dyn QuotaStore>,
    /// Retry policy.
    pub retries: Retries,
    /// Most calls in flight at once.
    pub max_in_flight: usize,
    /// Time bounds.
    pub deadlines: Deadlines,
    /// Back-off of failing tenants.
    pub backoff: FailureBackoff,
    /// Where everything is counted.
    pub metrics: Arc<Metrics>,
}

impl Outbound {
    /// Stacks the policies in front of `parts.source`.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            sources,
            tokens,
            store,
            retries,
            max_in_flight,
            deadlines,
            backoff,
            metrics,
        } = parts;
        Self {
            gate: Gate {
                store: store.clone(),
                metrics: metrics.clone(),
            },
            rate: RateLimit {
                store: store.clone(),
                metrics: metrics.clone(),
            },
            tenant_slots: TenantSlots {
                slots: Mutex::default(),
                metrics: metrics.clone(),
            },
            cap: InFlightCap::new(max_in_flight, metrics.clone()),
            sources: sources
                .into_iter()
                .map(|source| (source.metric(), source))
                .collect(),
            tokens,
            store,
            retries,
            deadlines,
            backoff,
            metrics,
        }
    }

    /// Whether a source reads `metric`.
    pub fn serves(&self, metric: Metric) -> bool {
        self.sources.contains_key(&metric)
    }

    /// The deadline of a fetch that starts now.
    pub fn deadline(&self) -> Instant {
        instant_after(Instant::now(), self.deadlines.fetch)
    }

    /// Layer 1 alone: whether the tenant's `metric` may be fetched now; its leave is what
    /// [`Outbound::fetch_admitted`] takes.
    pub async fn gate(&self, tenant: &Tenant, metric: Metric) -> Result<Admitted, Gated> {
        self.gate
            .check(quota_key(tenant, metric), score_key(tenant, metric))
            .await
    }

    /// Whether the in-flight cap lets work of `priority` start now (see [`InFlightCap::admits`]).
    pub fn admits(&self, priority: Priority) -> bool {
        self.cap.admits(priority)
    }

    /// Fetches the tenant's `metric` through the whole stack (see the module documentation):
    /// the gate, then [`Outbound::fetch_admitted`].
    pub async fn fetch(
        &self,
        tenant: &Arc<Tenant>,
        metric: Metric,
        deadline: Instant,
    ) -> Result<Reading, FetchError> {
        let admitted = self.gate(tenant, metric).await.map_err(FetchError::Gated)?;
        self.fetch_admitted(admitted, tenant, deadline).await
    }

    /// Fetches what the gate admitted, through the layers below it (retries, quota, slots,
    /// token, call): for a caller that asked the gate itself, so that the fetch is gated once.
    pub async fn fetch_admitted(
        &self,
        admitted: Admitted,
        tenant: &Arc<Tenant>,
        deadline: Instant,
    ) -> Result<Reading, FetchError> {
        let Admitted { quota, key } = admitted;
        let metric = key.metric;
        let source = self.source(metric)?;
        let result = self
            .with_retries(&Current, source.as_ref(), tenant, &quota, deadline)
            .await;
        let result = match result {
            Err(UpstreamError::Gone { detail }) => Err(UpstreamError::Gone {
                detail: gone_detail(&detail, tenant, metric),
            }),
            other => other,
        };
        match &result {
            Ok(_) => self.store.record_success(&key).await,
            // A 429 has its own cool-down; everything else counts towards the back-off.
            Err(UpstreamError::Throttled { .. }) => {}
            Err(UpstreamError::Gone { .. }) => {
                tracing::warn!(tenant = %tenant.id, metric = metric.as_str(), "the score endpoint is gone (404/410): not asked again for an hour");
                self.store.record_failure(&key, &GONE_BACKOFF).await;
            }
            Err(_) => {
                self.store.record_failure(&key, &self.backoff).await;
            }
        }
        result.map_err(FetchError::Upstream)
    }

    /// Up to `days` of the tenant's daily history of `metric` from its source, newest first,
    /// in pages of [`DAILY_PAGE_DAYS`] (a real Graph page of 30 snapshots with ~70 controls
    /// each is ~1.6 MB, within the answer size limit; 90 at once is not). Gated once; **every
    /// page is a call through the stack** (retried, charged to the tenant's quota, within its
    /// service's slots and the global cap, a 429 cooling the service down); a page holding
    /// fewer snapshots than it asked for is the last. Feeds no back-off.
    pub async fn fetch_daily(
        &self,
        tenant: &Arc<Tenant>,
        metric: Metric,
        days: u32,
        deadline: Instant,
    ) -> Result<Vec<Reading>, FetchError> {
        let Admitted { quota, .. } = self.gate(tenant, metric).await.map_err(FetchError::Gated)?;
        let source = self.source(metric)?;
        let mut readings = Vec::new();
        let mut skip = 0;
        while skip < days {
            let page = DailyPage {
                days: DAILY_PAGE_DAYS.min(days - skip),
                skip,
            };
            let answer = self
                .with_retries(&Daily(page), source.as_ref(), tenant, &quota, deadline)
                .await
                .map_err(FetchError::Upstream)?;
            readings.extend(answer.readings);
            if answer.snapshots < page.days as usize {
                break;
            }
            skip += page.days;
        }
        Ok(readings)
    }

    /// Every control profile of the tenant, page after page (each page's `@odata.nextLink`
    /// followed as the source allows, at most [`MAX_PROFILE_PAGES`]), from the source of
    /// `metric` (`secure`). Gated once; **every page is a call through the stack** as in
    /// [`Outbound::fetch_daily`]: retried, charged to the tenant's quota, within its service's
    /// slots and the global cap, a 429 cooling the service down. Feeds no back-off.
    pub async fn fetch_control_profiles(
        &self,
        tenant: &Arc<Tenant>,
        metric: Metric,
        deadline: Instant,
    ) -> Result<Vec<ControlProfile>, FetchError> {
        let Admitted { quota, .. } = self.gate(tenant, metric).await.map_err(FetchError::Gated)?;
        let source = self.source(metric)?;
        let mut profiles = Vec::new();
        let mut next = None;
        for _ in 0..MAX_PROFILE_PAGES {
            let page = self
                .with_retries(
                    &ProfilesPage(next.take()),
                    source.as_ref(),
                    tenant,
                    &quota,
                    deadline,
                )
                .await
                .map_err(FetchError::Upstream)?;
            profiles.extend(page.value);
            match page.next_link {
                Some(link) => next = Some(link),
                None => return Ok(profiles),
            }
        }
        Err(FetchError::Upstream(UpstreamError::Failed {
            service: metric.service(),
            detail: format!(
                "{} sent more than {MAX_PROFILE_PAGES} pages of control profiles",
                metric.service().display_name()
            ),
        }))
    }

    /// The source that reads `metric`.
    fn source(&self, metric: Metric) -> Result<&Arc<dyn ScoreSource>, FetchError> {
        self.sources.get(&metric).ok_or_else(|| {
            // The services register a source for every metric; only a test stack may lack one.
            FetchError::Upstream(UpstreamError::Failed {
                service: metric.service(),
                detail: format!("no source reads the {metric} metric"),
            })
        })
    }

    /// Failed fetches of the tenant's `metric` in a row (0 after a success).
    pub async fn consecutive_failures(&self, tenant: &Tenant, metric: Metric) -> u32 {
        self.store
            .consecutive_failures(&score_key(tenant, metric))
            .await
    }

    /// The in-flight cap, for reporting.
    pub fn in_flight_cap(&self) -> &InFlightCap {
        &self.cap
    }

    /// Tenants in cool-down now.
    pub fn tenants_cooling_down(&self) -> usize {
        self.store.cooling_down()
    }

    /// Forgets what is held for tenants that left or changed (live reload): limits, cool-downs,
    /// back-off, tenant slots, credentials and their tokens.
    pub async fn retain(&self, registry: &Registry) {
        self.store.retain(registry).await;
        self.tenant_slots.retain(registry);
        self.tokens.retain(registry);
    }

    /// Layer 2: attempts until a decision ends the fetch; applies `CoolDown` and `RenewToken`.
    async fn with_retries<C: Call>(
        &self,
        call: &C,
        source: &dyn ScoreSource,
        tenant: &Arc<Tenant>,
        key: &QuotaKey,
        deadline: Instant,
    ) -> Result<C::Output, UpstreamError> {
        let mut retries = 0;
        let mut renewed = false;
        loop {
            let outcome = self.attempt(call, source, tenant, key, deadline).await?;
            match classify(outcome, renewed, key.service) {
                Decision::Done(reading) => return Ok(reading),
                Decision::Fail(error) => return Err(error),
                Decision::CoolDown(retry_after) => {
                    self.store.cool_down(key, retry_after).await;
                    return Err(UpstreamError::Throttled {
                        service: key.service,
                        retry_after,
                    });
                }
                Decision::RenewToken(detail) => {
                    tracing::info!(tenant = %tenant.id, service = key.service.as_str(), "the source answered 401; renewing the token once");
                    tracing::debug!(tenant = %tenant.id, "first 401: {detail}");
                    self.tokens.renew(&tenant.id);
                    renewed = true;
                }
                Decision::Retry(detail) => {
                    let Some(pause) = self.retries.next(retries, deadline) else {
                        return Err(UpstreamError::Failed {
                            service: key.service,
                            detail,
                        });
                    };
                    retries += 1;
                    tracing::debug!(tenant = %tenant.id, retry = retries, pause_ms = pause.as_millis() as u64, "retrying after a transient failure: {detail}");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Layers 2.1–2.4: one attempt. `Err` when a policy refuses (quota, slot, deadline), else the
    /// attempt's outcome for [`classify`].
    async fn attempt<C: Call>(
        &self,
        call: &C,
        source: &dyn ScoreSource,
        tenant: &Arc<Tenant>,
        key: &QuotaKey,
        deadline: Instant,
    ) -> Result<Result<C::Output, Failure>, UpstreamError> {
        self.rate.charge(key, tenant, deadline).await?;
        let _tenant_slot = self.tenant_slots.acquire(key, tenant, deadline).await?;
        let _slot = self.cap.acquire(key.service, deadline).await?;
        let scope = source.scope(tenant);
        let token = match tokio::time::timeout_at(deadline, self.tokens.token(tenant, &scope)).await
        {
            Err(_) => {
                self.metrics.token_request("timeout");
                return Err(UpstreamError::Timeout {
                    service: key.service,
                });
            }
            Ok(Err(error)) => {
                self.metrics.token_request(match error {
                    TokenError::Rejected { .. } => "rejected",
                    TokenError::Invalid { .. } => "invalid",
                    TokenError::Unavailable { .. } => "unavailable",
                });
                return Ok(Err(Failure::Token(error)));
            }
            Ok(Ok(token)) => {
                self.metrics.token_request("ok");
                token
            }
        };
        let attempt_deadline = deadline.min(instant_after(Instant::now(), self.deadlines.attempt));
        let started = Instant::now();
        let outcome =
            match tokio::time::timeout_at(attempt_deadline, call.run(source, tenant, &token)).await
            {
                Err(_) => Err(Failure::AttemptTimeout {
                    deadline_reached: attempt_deadline >= deadline,
                }),
                Ok(result) => result.map_err(Failure::Call),
            };
        self.metrics
            .upstream_call(key.service, call_outcome(&outcome), started.elapsed());
        Ok(outcome)
    }
}

/// What one attempt asks of a source: the stack around it is the same for every kind of call.
#[async_trait::async_trait]
trait Call: Sync {
    /// The answer.
    type Output: Send;
    /// One call, with no retry and no deadline (the stack bounds it).
    async fn run(
        &self,
        source: &dyn ScoreSource,
        tenant: &Tenant,
        token: &crate::token::BearerToken,
    ) -> Result<Self::Output, CallFailure>;
}

/// The current score ([`ScoreSource::call`]).
struct Current;

#[async_trait::async_trait]
impl Call for Current {
    type Output = Reading;

    async fn run(
        &self,
        source: &dyn ScoreSource,
        tenant: &Tenant,
        token: &crate::token::BearerToken,
    ) -> Result<Reading, CallFailure> {
        source.call(tenant, token).await
    }
}

/// Up to this many days of the source's history ([`ScoreSource::daily`]).
struct Daily(DailyPage);

#[async_trait::async_trait]
impl Call for Daily {
    type Output = DailyReadings;

    async fn run(
        &self,
        source: &dyn ScoreSource,
        tenant: &Tenant,
        token: &crate::token::BearerToken,
    ) -> Result<DailyReadings, CallFailure> {
        source.daily(tenant, token, self.0).await
    }
}

/// One page of control profiles ([`ScoreSource::control_profiles`]): the first, or the one a
/// previous page's `@odata.nextLink` names.
struct ProfilesPage(Option<String>);

#[async_trait::async_trait]
impl Call for ProfilesPage {
    type Output = ControlProfilesPage;

    async fn run(
        &self,
        source: &dyn ScoreSource,
        tenant: &Tenant,
        token: &crate::token::BearerToken,
    ) -> Result<ControlProfilesPage, CallFailure> {
        source
            .control_profiles(tenant, token, self.0.as_deref())
            .await
    }
}

/// Whose rate windows, cool-down and slots a fetch of `metric` uses.
fn quota_key(tenant: &Tenant, metric: Metric) -> QuotaKey {
    QuotaKey {
        tenant: tenant.id.clone(),
        service: metric.service(),
    }
}

/// Whose back-off a fetch of `metric` feeds.
fn score_key(tenant: &Tenant, metric: Metric) -> ScoreKey {
    ScoreKey {
        tenant: tenant.id.clone(),
        metric,
    }
}

/// The detail of `upstream_gone`: what the source answered, and what the tenant can still ask.
fn gone_detail(answer: &str, tenant: &Tenant, metric: Metric) -> String {
    let others: Vec<&str> = tenant
        .metrics()
        .iter()
        .filter(|other| **other != metric)
        .map(|other| other.as_str())
        .collect();
    let hint = match others.as_slice() {
        [] => "this tenant has no other metric; enable `secure` (Microsoft Graph, permission \
               SecurityEvents.Read.All) in its `metrics`"
            .to_owned(),
        [only] => format!("this tenant's other metric: {only} (use metric={only})"),
        _ => {
            // `secure` is the one that survives the Defender API's retirement: suggest it.
            let suggested = if others.contains(&"secure") {
                "secure"
            } else {
                others.last().copied().unwrap_or_default()
            };
            format!(
                "this tenant's other metrics: {} (use metric={suggested})",
                others.join(", ")
            )
        }
    };
    format!(
        "the {metric} score endpoint is gone ({answer}): the API is retired or not offered in \
         this cloud; {hint}"
    )
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
