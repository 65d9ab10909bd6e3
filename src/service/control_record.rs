//! What a tenant's newly joined controls tell the history and the alerts: the
//! [`ControlsObserver`] the composition root sets on the [`crate::tenant_controls::ControlBook`]
//! when the history is on. Each new snapshot's controls go to the per-control history (a row
//! only for a control that changed) and to the `control_regressed` rules; the controls of the
//! 90-day back-fill's snapshots go into the per-control history at once.
//!
//! Like [`super::record::Recorder`], nothing here waits on the request path: the history's
//! buffer never blocks, the alerts queue, and the back-fill's insert is a task of its own.

use crate::alerts::Alerts;
use crate::controls::TenantControl;
use crate::history::{ControlPoint, History};
use crate::tenant_controls::ControlsObserver;
use crate::tenants::Tenant;
use std::sync::Arc;
use time::OffsetDateTime;

/// Records controls into the history and tells the alerts.
pub struct ControlRecorder {
    history: Arc<History>,
    /// The alert rules' engine, when alerts are on (they need the history).
    alerts: Option<Arc<Alerts>>,
    runtime: tokio::runtime::Handle,
}

impl ControlRecorder {
    /// A recorder into `history`; back-filled days are written on `runtime`.
    pub fn new(
        history: Arc<History>,
        alerts: Option<Arc<Alerts>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            history,
            alerts,
            runtime,
        }
    }
}

fn points(controls: &[TenantControl]) -> Vec<ControlPoint> {
    controls.iter().map(ControlPoint::from).collect()
}

impl ControlsObserver for ControlRecorder {
    fn on_controls(&self, tenant: &Tenant, at: OffsetDateTime, controls: &[TenantControl]) {
        let points = points(controls);
        if let Some(alerts) = &self.alerts {
            alerts.on_controls(tenant.id.as_str(), at, &points);
        }
        self.history.record_controls(&tenant.id, at, points);
    }

    fn on_backfill(&self, tenant: &Tenant, days: &[(OffsetDateTime, Box<[TenantControl]>)]) {
        let days: Vec<(OffsetDateTime, Vec<ControlPoint>)> = days
            .iter()
            .map(|(at, controls)| (*at, points(controls)))
            .collect();
        let history = self.history.clone();
        let tenant = tenant.id.clone();
        self.runtime.spawn(async move {
            let Ok(store) = history.store() else {
                // Not connected: the per-control history starts with the next snapshots.
                tracing::warn!(%tenant, "history: not connected; the controls' back-fill is skipped");
                return;
            };
            match store.insert_control_days(tenant.as_str(), &days).await {
                Ok(inserted) => {
                    tracing::info!(%tenant, days = days.len(), inserted, "history: controls back-filled");
                }
                Err(error) => {
                    tracing::warn!(%tenant, "history: writing the controls' back-fill failed: {}", crate::telemetry::error_chain(&error));
                }
            }
        });
    }
}
