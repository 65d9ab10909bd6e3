//! What the cache's fetches tell the history and the alerts: the [`ReadingObserver`] the
//! composition root wires into the cache. Every successful reading goes to the history and the
//! alerts, every failed fetch to the alerts, and a tenant's first successful fetch of a metric
//! whose source keeps a daily history of its own (today `secure`: Graph's 90 daily snapshots)
//! starts the back-fill of that history. The cache itself knows none of them.
//!
//! Both leave the request path: a reading goes into the history's bounded buffer (never waits,
//! never fails), and the back-fill is a task of its own. Back-fills queue: at most
//! [`BACKFILLS_AT_ONCE`] run at a time, so that 1,000 tenants read at once (a gateway's start,
//! a cold `/scores`) do not fetch and parse 90 days of snapshots each at the same moment, ahead
//! of the callers' own fetches; the others wait their turn (a waiting back-fill holds a tenant
//! handle, nothing more). The back-fill's Graph calls (`$top=30`, then `$skip=30` and `60`) go
//! through the same policy stack as every fetch ([`Outbound::fetch_daily`]): gated, charged to
//! the tenant's Graph quota, within Graph's slots, cooled down on a 429. When the per-control
//! history is on, the tenant's control profiles are fetched first (unless held), so that each
//! page's controls are joined and written as the page arrives.
//!
//! A tenant's metric is back-filled when the history holds no *day* point of it yet (see
//! [`crate::history::Store::has_daily_points`]): hourly points do not count, so the reading
//! that triggers the back-fill (written meanwhile) does not prevent it, and once it is done,
//! neither a later fetch nor a restart repeats it. Each process asks the database once per
//! tenant; a back-fill that fails (database away, Graph refusing) is tried again on the
//! tenant's next successful fetch.

use crate::alerts::Alerts;
use crate::cache::ReadingObserver;
use crate::history::{DailySnapshot, History, Reading as Point};
use crate::policy::Outbound;
use crate::tenant_controls::ControlBook;
use crate::tenants::{Tenant, TenantId};
use crate::upstream::{Metric, Reading, ScoreKey};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// The back-fills started or found done: tenant, metric and the Entra tenant it stood for.
type Checked = HashSet<(TenantId, Metric, String)>;

/// How many of Graph's daily snapshots a back-fill asks for: all Graph keeps.
pub const BACKFILL_DAYS: u32 = 90;

/// How many back-fills run at a time in one process; the others wait their turn.
pub const BACKFILLS_AT_ONCE: usize = 4;

/// Records readings into the history and back-fills what sources keep; tells the alerts of every
/// reading and failure.
pub struct Recorder {
    history: Arc<History>,
    /// The alert rules' engine, when alerts are on (they need the history).
    alerts: Option<Arc<Alerts>>,
    outbound: Arc<Outbound>,
    runtime: tokio::runtime::Handle,
    /// Tenants and metrics whose back-fill this process has started or found done, with the
    /// Entra tenant they stood for: a tenant id re-pointed at another one starts a new series,
    /// back-filled again.
    checked: Arc<Mutex<Checked>>,
    /// The turns of the back-fills ([`BACKFILLS_AT_ONCE`]).
    turns: Arc<Semaphore>,
    /// The controls' book, when the per-control history records the back-fill's controls.
    controls: Option<Arc<ControlBook>>,
}

impl Recorder {
    /// A recorder into `history`; back-fills call through `outbound` on `runtime`.
    pub fn new(
        history: Arc<History>,
        alerts: Option<Arc<Alerts>>,
        outbound: Arc<Outbound>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            history,
            alerts,
            outbound,
            runtime,
            checked: Arc::default(),
            turns: Arc::new(Semaphore::new(BACKFILLS_AT_ONCE)),
            controls: None,
        }
    }

    /// Fetches the tenant's control profiles before each back-fill (the per-control history
    /// records the back-fill's controls).
    pub fn with_controls(mut self, controls: Arc<ControlBook>) -> Self {
        self.controls = Some(controls);
        self
    }
}

impl ReadingObserver for Recorder {
    /// Records one successful fetch's reading; starts the tenant's back-fill when it is its
    /// first reading in this process of a metric whose source keeps a daily history. Never
    /// waits.
    fn on_reading(&self, tenant: &Arc<Tenant>, metric: Metric, reading: &Reading) {
        let at = OffsetDateTime::from(reading.fetched_at);
        self.history.record(Point {
            key: ScoreKey {
                tenant: tenant.id.clone(),
                metric,
            },
            body: reading.clone(),
        });
        // After the history: `drop` rules compare with what the history held before.
        if let Some(alerts) = &self.alerts {
            alerts.on_reading(tenant.id.as_str(), metric, reading.score, at);
        }
        if crate::upstream::sources::keeps_daily_history(metric)
            && self
                .checked
                .lock()
                .insert((tenant.id.clone(), metric, tenant.tenant_id.clone()))
        {
            self.history.count_backfill(false);
            let history = self.history.clone();
            let (outbound, controls, checked) = (
                self.outbound.clone(),
                self.controls.clone(),
                self.checked.clone(),
            );
            let (tenant, turns) = (tenant.clone(), self.turns.clone());
            self.runtime.spawn(async move {
                // The semaphore is never closed: a permit always comes. The back-fill's future
                // (its HTTP calls' state, several KiB) is made and boxed only once its turn
                // has come: 10,000 waiting back-fills hold their handles, not 10,000 of them.
                if let Ok(_turn) = turns.acquire_owned().await {
                    Box::pin(backfill(
                        history.clone(),
                        outbound,
                        controls,
                        tenant,
                        metric,
                        checked,
                    ))
                    .await;
                }
                history.count_backfill(true);
            });
        }
    }

    /// Tells the alerts that a fetch failed (after its retries), for `failing_for` rules.
    fn on_failure(&self, tenant: &Tenant, metric: Metric) {
        if let Some(alerts) = &self.alerts {
            alerts.on_failure(tenant.id.as_str(), metric, OffsetDateTime::now_utc());
        }
    }
}

/// Back-fills the tenant's history of `metric` from its source's own daily history unless it
/// has been already; on failure, forgets the tenant so that its next successful fetch tries
/// again.
async fn backfill(
    history: Arc<History>,
    outbound: Arc<Outbound>,
    controls: Option<Arc<ControlBook>>,
    tenant: Arc<Tenant>,
    metric: Metric,
    checked: Arc<Mutex<Checked>>,
) {
    let retry_later = || {
        checked
            .lock()
            .remove(&(tenant.id.clone(), metric, tenant.tenant_id.clone()));
    };
    let Ok(store) = history.store() else {
        // Not connected yet: the next successful fetch asks again.
        retry_later();
        return;
    };
    match store.has_daily_points(tenant.id.as_str(), metric).await {
        Ok(true) => return,
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(tenant = %tenant.id, "history: cannot tell whether the {metric} score is back-filled; tried again on the next fetch: {}", crate::telemetry::error_chain(&error));
            retry_later();
            return;
        }
    }
    if let Some(controls) = &controls {
        if let Err(error) = controls
            .prepare_backfill(&tenant, outbound.deadline())
            .await
        {
            tracing::warn!(tenant = %tenant.id, "history: the {metric} score back-fill waits for the control profiles; tried again on the next fetch: {error}");
            retry_later();
            return;
        }
    }
    let readings = match outbound
        .fetch_daily(&tenant, metric, BACKFILL_DAYS, outbound.deadline())
        .await
    {
        Ok(readings) => readings,
        Err(error) => {
            let error = match error {
                crate::policy::FetchError::Gated(gated) => gated.into_error(metric.service()),
                crate::policy::FetchError::Upstream(error) => error,
            };
            tracing::warn!(tenant = %tenant.id, "history: the {metric} score back-fill failed; tried again on the next fetch: {error}");
            retry_later();
            return;
        }
    };
    let snapshots: Vec<DailySnapshot> = readings
        .iter()
        .filter_map(|reading| {
            let at = OffsetDateTime::parse(
                &reading.time,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some(DailySnapshot {
                at,
                score: reading.score,
                max_score: reading.secure.as_ref().map(|secure| secure.max_score),
            })
        })
        .collect();
    match store
        .insert_daily(tenant.id.as_str(), metric, &snapshots)
        .await
    {
        Ok(inserted) => {
            history.forget_past(tenant.id.as_str(), metric);
            tracing::info!(tenant = %tenant.id, snapshots = snapshots.len(), inserted, "history: {metric} score back-filled from {}", metric.service().display_name());
        }
        Err(error) => {
            tracing::warn!(tenant = %tenant.id, "history: writing the {metric} score back-fill failed; tried again on the next fetch: {}", crate::telemetry::error_chain(&error));
            retry_later();
        }
    }
}
