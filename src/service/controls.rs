//! The use cases of the controls routes: one tenant's controls, and every control across the
//! tenants a caller may see.

use super::{ServiceError, Services};
use crate::auth::Scope;
use crate::cache::Served;
use crate::fanout::{ControlsPage, ControlsQuery};
use crate::tenant_controls::Joined;
use crate::tenants::{Registry, Tenant};
use crate::upstream::Metric;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Services {
    /// The controls of one tenant `scope` may see: its `secure` score as the score route
    /// serves it (no older than `max_age` when given), and the controls of that snapshot
    /// joined with its profiles. `max_age` 0 also fetches the profiles again.
    pub async fn tenant_controls(
        &self,
        id: &str,
        scope: &Scope,
        max_age: Option<Duration>,
    ) -> Result<(Arc<Tenant>, Served, Joined), ServiceError> {
        if let Ok(tenant) = self.tenant(id, scope) {
            if tenant.has(Metric::Secure) {
                self.controls.want(&tenant);
            }
        }
        let (tenant, served) = self.score(id, Metric::Secure, scope, max_age).await?;
        let deadline = crate::quota::instant_after(Instant::now(), self.request_wait);
        let joined = self
            .controls
            .controls(
                &tenant,
                served.reading(),
                max_age == Some(Duration::ZERO),
                deadline,
            )
            .await
            .map_err(|error| ServiceError::Score(error.into_score_error()))?;
        Ok((tenant, served, joined))
    }

    /// The `/controls` page over the tenants in `registry` that `visible` lets the caller see.
    pub async fn portfolio_controls(
        &self,
        registry: &Registry,
        visible: impl Fn(&Tenant) -> bool,
        query: &ControlsQuery,
    ) -> ControlsPage {
        crate::fanout::controls(&self.cache, &self.controls, registry, visible, query).await
    }
}
