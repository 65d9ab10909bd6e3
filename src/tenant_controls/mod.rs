//! Each tenant's Secure Score controls, as the controls routes serve them: the newest snapshot's
//! `controlScores` joined with the tenant's control profiles.
//!
//! Owns the profiles (fetched per tenant at most once per `[upstream]
//! control_profiles_refresh_hours`, or when a caller forces it, one fetch at a time per tenant,
//! every page through the policy stack) and the last joined list of every tenant. Snapshots
//! arrive as the `secure` source reads them ([`ControlsSink`]: the same bytes as the score, no
//! extra call); each is joined at once with the profiles held, and joined again when new
//! profiles arrive. Profile texts are kept once per control and version ([`Interner`]).
//!
//! Profiles are fetched when a controls route needs them, not for every tenant with `secure`:
//! a tenant nobody asks controls of costs no profile call. Once a [`ControlsObserver`] is set
//! (the history's per-control record), a snapshot that arrives without fresh profiles fetches
//! them in the background, so that every snapshot is told.
//!
//! Several replicas: each keeps its own profiles and fetches them itself (at most once per
//! refresh interval each). Profiles are a few pages a day per tenant and replica, far within
//! Graph's limits; sharing them through Redis would serialise every profile text per tenant
//! and lose the sharing of the interner. A replica serving a score another replica fetched
//! (from Redis) has no snapshot of its own yet: the controls route then makes one `secure`
//! call through the policy stack for it.
//!
//! It does not decide what a route shows (filters, sorts, summaries are [`crate::controls`]).

use crate::controls::graph::SnapshotControls;
use crate::controls::{Interner, TenantControl, TenantProfiles};
use crate::model::{Metric, Reading};
use crate::policy::{FetchError, Outbound};
use crate::tenants::{Registry, Tenant, TenantId};
use crate::upstream::{ControlsSink, UpstreamError};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

/// The metric whose snapshots carry controls.
const METRIC: Metric = Metric::Secure;

/// How long after a failed profiles fetch the next one waits (unless a caller forces it): a
/// tenant whose Graph refuses is not asked again on every request, each with its retries.
pub const PROFILES_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Told of every newly joined snapshot of a tenant's controls (joined with fetched profiles):
/// the history's per-control record and the `control_regressed` alerts subscribe. Called
/// without locks held, on the task that joined; an implementation must not block.
pub trait ControlsObserver: Send + Sync {
    /// The tenant's controls of the snapshot taken at `at`; once per snapshot.
    fn on_controls(&self, tenant: &Tenant, at: OffsetDateTime, controls: &[TenantControl]);
    /// The controls of the snapshots of a daily-history answer (the 90-day back-fill), each
    /// joined with the tenant's profiles, newest first.
    fn on_backfill(&self, _tenant: &Tenant, _days: &[(OffsetDateTime, Box<[TenantControl]>)]) {}
}

/// Profiles held for a tenant.
struct HeldProfiles {
    profiles: TenantProfiles,
    /// When they were fetched.
    fetched: Instant,
}

/// What is held for one tenant.
#[derive(Default)]
struct Entry {
    /// The Entra tenant everything here was read for: a tenant id re-pointed at another starts
    /// over.
    entra: String,
    profiles: Option<HeldProfiles>,
    joined: Option<Joined>,
    /// The snapshot time last told to the observer.
    observed: Option<String>,
    /// The last failed profiles fetch since the last good one: when, and why.
    failed: Option<(Instant, ControlsError)>,
}

/// Every tenant's profiles and joined controls; the [`ControlsSink`] of the `secure` source.
pub struct ControlBook {
    interner: Interner,
    tenants: Mutex<HashMap<TenantId, Entry>>,
    /// One profile fetch (and one snapshot fetch) at a time per tenant.
    flights: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    observer: OnceLock<Arc<dyn ControlsObserver>>,
    /// Set once the stack is built (its sources hold this book weakly, as their sink).
    outbound: OnceLock<Arc<Outbound>>,
    /// The registrations in force, for background profile fetches (swapped on reload).
    registry: RwLock<Arc<Registry>>,
    /// How long fetched profiles are used before they are asked for again.
    refresh: Duration,
    /// Profiles fetched less than this ago answer a forced call too (`[cache]
    /// min_forced_interval_ms`, as for scores): a caller looping on `max_age=0` spends no quota.
    min_forced: Duration,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ControlBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlBook")
            .field("tenants", &self.tenants.lock().len())
            .field("interner", &self.interner)
            .finish()
    }
}

/// Why a tenant's controls cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlsError {
    /// Fetching the profiles or the snapshot failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// No answer within the request's deadline.
    #[error("the controls were not ready within the request's deadline")]
    Deadline,
}

impl ControlsError {
    /// The same failure as a score's: the routes answer both alike.
    pub fn into_score_error(self) -> crate::cache::ScoreError {
        match self {
            Self::Upstream(error) => crate::cache::ScoreError::Upstream(error),
            Self::Deadline => crate::cache::ScoreError::Deadline,
        }
    }
}

fn fetch_error(error: FetchError) -> ControlsError {
    ControlsError::Upstream(match error {
        FetchError::Gated(gated) => gated.into_error(METRIC.service()),
        FetchError::Upstream(error) => error,
    })
}

impl ControlBook {
    /// An empty book; profiles are used for `refresh` before they are fetched again, and
    /// answer a forced call for `min_forced` after their fetch.
    pub fn new(
        refresh: Duration,
        min_forced: Duration,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            interner: Interner::new(),
            tenants: Mutex::default(),
            flights: Mutex::default(),
            observer: OnceLock::new(),
            outbound: OnceLock::new(),
            registry: RwLock::new(registry),
            refresh,
            min_forced,
            runtime,
        })
    }

    /// Connects the stack profiles and snapshots are fetched through (once).
    pub fn connect(&self, outbound: &Arc<Outbound>) {
        let _ = self.outbound.set(outbound.clone());
    }

    /// Sets the observer of newly joined snapshots (once; later calls are ignored).
    pub fn observe(&self, observer: Arc<dyn ControlsObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Keeps the tenant's snapshots from now on: called before a controls route reads the
    /// tenant's `secure` score, so that the snapshot that score's fetch reads is kept and the
    /// route needs no call of its own. A tenant nobody asked controls of keeps none (unless
    /// the history records controls): its first controls request then reads the snapshot with
    /// one `secure` call when its score was fetched before.
    pub fn want(&self, tenant: &Tenant) {
        let mut tenants = self.tenants.lock();
        self.entry(&mut tenants, tenant);
    }

    /// Forgets the tenants that left `registry` or now stand for another Entra tenant.
    pub fn retain(&self, registry: &Arc<Registry>) {
        *self.registry.write() = registry.clone();
        self.tenants.lock().retain(|id, entry| {
            registry
                .get(id.as_str())
                .is_some_and(|tenant| tenant.tenant_id == entry.entra)
        });
        self.flights
            .lock()
            .retain(|id, _| registry.get(id.as_str()).is_some());
    }

    /// The shared copies alive (profile versions, sets, texts), for the memory figures.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// The tenant's controls for its `secure` reading `served`: profiles fetched first when
    /// none are held, they are older than the refresh interval, or `force` (a caller's
    /// `max_age=0`; a fetch that ended after the call started counts); the snapshot is the
    /// newest this process read, or one `secure` call when it holds none as new as `served`.
    /// Gives up at `deadline`.
    pub async fn controls(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        served: &Reading,
        force: bool,
        deadline: Instant,
    ) -> Result<Joined, ControlsError> {
        tokio::time::timeout_at(
            deadline,
            self.controls_within(tenant, served, force, deadline),
        )
        .await
        .unwrap_or(Err(ControlsError::Deadline))
    }

    async fn controls_within(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        served: &Reading,
        force: bool,
        deadline: Instant,
    ) -> Result<Joined, ControlsError> {
        let outbound = self.outbound()?;
        if !self.profiles_serve(tenant, force, Instant::now()) {
            // A task of its own, with the stack's deadline: a caller that stops waiting does
            // not cancel a fetch half-way through its pages (its quota spent for nothing).
            let this = self.clone();
            let owned = tenant.clone();
            let fetch_deadline = outbound.deadline();
            self.runtime
                .spawn(async move { this.ensure_profiles(&owned, force, fetch_deadline).await })
                .await
                .map_err(|_| {
                    ControlsError::Upstream(UpstreamError::Failed {
                        service: METRIC.service(),
                        detail: "the control profiles fetch failed inside the gateway".to_owned(),
                    })
                })??;
        }
        if let Some(joined) = self.joined_as_new_as(tenant, served) {
            return Ok(joined);
        }
        let flight = self.flight(&tenant.id);
        let _one = flight.lock().await;
        if let Some(joined) = self.joined_as_new_as(tenant, served) {
            return Ok(joined);
        }
        // A score this process did not read (another replica's, from Redis): one call of our
        // own, which the sink joins.
        outbound
            .fetch(tenant, METRIC, deadline)
            .await
            .map_err(fetch_error)?;
        self.joined(tenant).ok_or_else(|| {
            ControlsError::Upstream(UpstreamError::Failed {
                service: METRIC.service(),
                detail: "Microsoft Graph sent a snapshot without controls".to_owned(),
            })
        })
    }

    /// The tenant's last joined controls, if any (for its current Entra tenant).
    pub fn joined(&self, tenant: &Tenant) -> Option<Joined> {
        let tenants = self.tenants.lock();
        let entry = tenants.get(&tenant.id)?;
        (entry.entra == tenant.tenant_id)
            .then(|| entry.joined.clone())
            .flatten()
    }

    fn joined_as_new_as(&self, tenant: &Tenant, served: &Reading) -> Option<Joined> {
        self.joined(tenant)
            .filter(|joined| joined.snapshot.fetched_at >= served.fetched_at)
    }

    fn held_profiles(&self, tenant: &Tenant) -> Option<TenantProfiles> {
        let tenants = self.tenants.lock();
        let entry = tenants.get(&tenant.id)?;
        (entry.entra == tenant.tenant_id)
            .then(|| entry.profiles.as_ref().map(|held| held.profiles.clone()))
            .flatten()
    }

    fn flight(&self, id: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.flights.lock().entry(id.clone()).or_default().clone()
    }

    fn outbound(&self) -> Result<Arc<Outbound>, ControlsError> {
        self.outbound.get().cloned().ok_or_else(|| {
            ControlsError::Upstream(UpstreamError::Failed {
                service: METRIC.service(),
                detail: "the controls are not connected to the upstream stack".to_owned(),
            })
        })
    }

    /// Whether the tenant's held profiles serve a call that started at `asked`.
    fn profiles_serve(&self, tenant: &Tenant, force: bool, asked: Instant) -> bool {
        let tenants = self.tenants.lock();
        let Some(held) = tenants
            .get(&tenant.id)
            .filter(|entry| entry.entra == tenant.tenant_id)
            .and_then(|entry| entry.profiles.as_ref())
        else {
            return false;
        };
        if force {
            held.fetched >= asked || held.fetched.elapsed() < self.min_forced
        } else {
            held.fetched.elapsed() < self.refresh
        }
    }

    /// Fetches the tenant's profiles unless those held serve; one fetch at a time per tenant
    /// (those waiting take its result). A failed fetch with profiles held keeps serving them.
    async fn ensure_profiles(
        &self,
        tenant: &Arc<Tenant>,
        force: bool,
        deadline: Instant,
    ) -> Result<(), ControlsError> {
        let asked = Instant::now();
        if self.profiles_serve(tenant, force, asked) {
            return Ok(());
        }
        let flight = self.flight(&tenant.id);
        let _one = flight.lock().await;
        if self.profiles_serve(tenant, force, asked) {
            return Ok(());
        }
        let held = self.held_profiles(tenant).is_some();
        if let Some(error) = self.recent_failure(tenant).filter(|_| !force) {
            return if held { Ok(()) } else { Err(error) };
        }
        let outbound = self.outbound()?;
        match outbound
            .fetch_control_profiles(tenant, METRIC, deadline)
            .await
        {
            Ok(profiles) => {
                let profiles = self.interner.tenant_profiles(&tenant.tenant_id, &profiles);
                self.store_profiles(tenant, profiles);
                Ok(())
            }
            Err(error) => {
                let error = fetch_error(error);
                {
                    let mut tenants = self.tenants.lock();
                    self.entry(&mut tenants, tenant).failed = Some((Instant::now(), error.clone()));
                }
                if held {
                    tracing::warn!(tenant = %tenant.id, "control profiles not refreshed, the ones held are used: {error}");
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Why the tenant's last profiles fetch failed, if it did less than
    /// [`PROFILES_RETRY_AFTER_FAILURE`] ago.
    fn recent_failure(&self, tenant: &Tenant) -> Option<ControlsError> {
        let tenants = self.tenants.lock();
        let entry = tenants
            .get(&tenant.id)
            .filter(|entry| entry.entra == tenant.tenant_id)?;
        let (at, error) = entry.failed.as_ref()?;
        (at.elapsed() < PROFILES_RETRY_AFTER_FAILURE).then(|| error.clone())
    }

    /// Keeps fresh profiles, joins the tenant's controls again with them, and tells the
    /// observer of a snapshot not yet told.
    fn store_profiles(&self, tenant: &Tenant, profiles: TenantProfiles) {
        let told = {
            let mut tenants = self.tenants.lock();
            let entry = self.entry(&mut tenants, tenant);
            if let Some(joined) = &mut entry.joined {
                joined.controls = joined
                    .controls
                    .iter()
                    .map(|control| control.with_profiles(&self.interner, &profiles))
                    .collect();
                joined.profiled = true;
            }
            entry.profiles = Some(HeldProfiles {
                profiles,
                fetched: Instant::now(),
            });
            entry.failed = None;
            Self::to_tell(entry)
        };
        self.tell(tenant, told, None);
    }

    /// The tenant's entry, started over when it was read for another Entra tenant.
    fn entry<'a>(
        &self,
        tenants: &'a mut HashMap<TenantId, Entry>,
        tenant: &Tenant,
    ) -> &'a mut Entry {
        let entry = tenants.entry(tenant.id.clone()).or_default();
        if entry.entra != tenant.tenant_id {
            *entry = Entry {
                entra: tenant.tenant_id.clone(),
                ..Entry::default()
            };
        }
        entry
    }

    /// The joined snapshot to tell the observer of, if profiled and not told yet (marked told).
    fn to_tell(entry: &mut Entry) -> Option<(OffsetDateTime, Arc<[TenantControl]>)> {
        let joined = entry.joined.as_ref().filter(|joined| joined.profiled)?;
        if entry.observed.as_deref() == Some(&*joined.snapshot.time) {
            return None;
        }
        let at = OffsetDateTime::parse(&joined.snapshot.time, &Rfc3339)
            .unwrap_or_else(|_| OffsetDateTime::from(joined.snapshot.fetched_at));
        let controls = joined.controls.clone();
        entry.observed = Some(joined.snapshot.time.to_string());
        Some((at, controls))
    }

    fn tell(
        &self,
        tenant: &Tenant,
        told: Option<(OffsetDateTime, Arc<[TenantControl]>)>,
        days: Option<Vec<(OffsetDateTime, Box<[TenantControl]>)>>,
    ) {
        let Some(observer) = self.observer.get() else {
            return;
        };
        if let Some(days) = days {
            observer.on_backfill(tenant, &days);
        }
        if let Some((at, controls)) = told {
            observer.on_controls(tenant, at, &controls);
        }
    }

    /// Fetches the tenant's profiles in the background when an observer waits for them and
    /// those held (if any) are due.
    fn refresh_in_background(self: &Arc<Self>, tenant: &Tenant) {
        if self.observer.get().is_none() || self.profiles_serve(tenant, false, Instant::now()) {
            return;
        }
        let Some(tenant) = self.registry.read().get(tenant.id.as_str()).cloned() else {
            return;
        };
        let Ok(outbound) = self.outbound() else {
            return;
        };
        let this = self.clone();
        self.runtime.spawn(async move {
            let deadline = outbound.deadline();
            if let Err(error) = this.ensure_profiles(&tenant, false, deadline).await {
                tracing::warn!(tenant = %tenant.id, "control profiles not fetched; tried again with the next snapshot: {error}");
            }
        });
    }

    /// The sink the `secure` source tells of the controls it reads: weak, so that the stack
    /// (which holds it) and this book (which holds the stack) form no cycle.
    pub fn sink(self: &Arc<Self>) -> Arc<dyn ControlsSink> {
        Arc::new(Sink(Arc::downgrade(self)))
    }

    /// A snapshot read with `reading`: joined at once with the profiles held.
    fn on_snapshot(
        self: &Arc<Self>,
        tenant: &Tenant,
        reading: &Reading,
        snapshot: &SnapshotControls,
    ) {
        let (told, due) = {
            let mut tenants = self.tenants.lock();
            // Kept only for tenants whose controls were asked for ([`ControlBook::want`]), or
            // for every tenant when the history records them: ~70 controls a snapshot, kept
            // for every `secure` tenant, were a third of a 10,000-tenant gateway's memory.
            if self.observer.get().is_none()
                && tenants
                    .get(&tenant.id)
                    .is_none_or(|entry| entry.entra != tenant.tenant_id)
            {
                return;
            }
            let entry = self.entry(&mut tenants, tenant);
            if entry
                .joined
                .as_ref()
                .is_some_and(|joined| joined.snapshot.fetched_at > reading.fetched_at)
            {
                return;
            }
            let held = entry.profiles.as_ref().map(|held| &held.profiles);
            let empty;
            let profiles = match held {
                Some(profiles) => profiles,
                None => {
                    empty = self.interner.tenant_profiles(&tenant.tenant_id, &[]);
                    &empty
                }
            };
            let controls = TenantControl::join(&self.interner, &snapshot.control_scores, profiles);
            entry.joined = Some(Joined {
                snapshot: Snapshot::of(reading),
                controls: controls.into(),
                profiled: held.is_some(),
            });
            let due = entry
                .profiles
                .as_ref()
                .is_none_or(|held| held.fetched.elapsed() >= self.refresh);
            (Self::to_tell(entry), due)
        };
        self.tell(tenant, told, None);
        if due {
            self.refresh_in_background(tenant);
        }
    }

    /// The snapshots of one page of a daily-history answer: joined and told to the observer.
    /// The back-fill asks for the profiles first ([`ControlBook::prepare_backfill`]); a page
    /// that arrives without them (the tenant re-pointed meanwhile) is not told: joined with
    /// bare profiles, its maxima and states would read as changes.
    fn on_daily(self: &Arc<Self>, tenant: &Tenant, snapshots: &[SnapshotControls]) {
        if self.observer.get().is_none() {
            return;
        }
        let Some(profiles) = self.held_profiles(tenant) else {
            tracing::warn!(tenant = %tenant.id, "history: a page of the controls' back-fill arrived without profiles; not recorded");
            return;
        };
        let days: Vec<(OffsetDateTime, Box<[TenantControl]>)> = snapshots
            .iter()
            .filter_map(|snapshot| {
                let at =
                    OffsetDateTime::parse(snapshot.created_date_time.as_deref()?, &Rfc3339).ok()?;
                let controls =
                    TenantControl::join(&self.interner, &snapshot.control_scores, &profiles);
                Some((at, controls))
            })
            .collect();
        self.tell(tenant, None, Some(days));
    }

    /// Before a back-fill of the tenant's daily history: when an observer records the
    /// controls, the tenant's profiles are fetched unless held and fresh, so that every page's
    /// controls are joined as they arrive (nothing waits in memory for them).
    pub async fn prepare_backfill(
        &self,
        tenant: &Arc<Tenant>,
        deadline: Instant,
    ) -> Result<(), ControlsError> {
        if self.observer.get().is_none() {
            return Ok(());
        }
        self.ensure_profiles(tenant, false, deadline).await
    }
}

/// [`ControlBook`] as the `secure` source's [`ControlsSink`].
struct Sink(Weak<ControlBook>);

impl ControlsSink for Sink {
    fn on_snapshot(&self, tenant: &Tenant, reading: &Reading, controls: SnapshotControls) {
        if let Some(book) = self.0.upgrade() {
            book.on_snapshot(tenant, reading, &controls);
        }
    }

    fn on_daily(&self, tenant: &Tenant, snapshots: Vec<SnapshotControls>) {
        if let Some(book) = self.0.upgrade() {
            book.on_daily(tenant, &snapshots);
        }
    }
}

mod joined;
pub use joined::{Joined, Snapshot};

#[cfg(test)]
mod tests;
