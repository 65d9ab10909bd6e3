//! Which Entra tenant each gateway tenant id stands for, kept beside the history
//! (`tenant_bindings`, migration `0004_tenant_bindings.sql`): a gateway id re-pointed at another
//! Entra tenant (its `tenant_id` changed in the configuration) starts a new series.
//!
//! The previous customer's rows are never shown to the new one, nor deleted: its history points
//! and alert events move under an archived id, `{id}@{previous Entra tenant id}@{Unix time}`,
//! which no registered tenant can have (a tenant id has no `@`) and which retention ages out
//! like any other. Its alert states and fetch outcomes (live state, not history) are reset: the
//! new customer's rules start from `ok`, and no `alert.resolved` is sent for what was firing for
//! the previous one. The alert tables live in this database (migration `0002_alerts.sql`), so
//! the one transaction moves both.
//!
//! Applied once the database is connected and migrated, before anything reads or writes it (at
//! start), and on every reload before the new registry is swapped in; the first time a tenant
//! id is seen, it is bound to its Entra tenant as it is (the rows already there are its own).

use super::HistoryError;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;

/// A gateway tenant id and the Entra tenant id it stands for.
pub type Binding = (String, String);

/// One tenant id whose Entra tenant changed: what was moved and reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebound {
    /// The gateway tenant id.
    pub tenant: String,
    /// The Entra tenant it stood for.
    pub previous: String,
    /// The Entra tenant it stands for now.
    pub current: String,
    /// The archived id the previous rows now have.
    pub archived_as: String,
    /// History points moved.
    pub points: u64,
    /// Alert events moved.
    pub events: u64,
    /// Alert states reset.
    pub states: u64,
}

/// Records each binding the database does not know yet, and starts a new series for each
/// tenant whose Entra tenant changed, all in one transaction. With several replicas, the
/// binding is changed conditionally: of two replicas applying the same change, one moves the
/// rows, the other finds it done.
pub(super) async fn apply(
    pool: &AnyPool,
    bindings: &[Binding],
    now: i64,
) -> Result<Vec<Rebound>, HistoryError> {
    let known: HashMap<String, String> =
        sqlx::query("SELECT tenant, entra_tenant FROM tenant_bindings")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("tenant")?, row.try_get("entra_tenant")?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let mut rebound = Vec::new();
    let mut transaction = pool.begin().await?;
    for (tenant, entra) in bindings {
        match known.get(tenant) {
            Some(previous) if previous == entra => {}
            None => {
                sqlx::query(
                    "INSERT INTO tenant_bindings (tenant, entra_tenant, bound_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(entra.as_str())
                .bind(now)
                .execute(&mut *transaction)
                .await?;
            }
            Some(previous) => {
                let changed = sqlx::query(
                    "UPDATE tenant_bindings SET entra_tenant = $1, bound_at = $2 \
                     WHERE tenant = $3 AND entra_tenant = $4",
                )
                .bind(entra.as_str())
                .bind(now)
                .bind(tenant.as_str())
                .bind(previous.as_str())
                .execute(&mut *transaction)
                .await?;
                if changed.rows_affected() != 1 {
                    // Another replica applied this change first.
                    continue;
                }
                let archived_as = format!("{tenant}@{previous}@{now}");
                let mut moved = Vec::with_capacity(2);
                for table in ["history_points", "alert_events", "history_control_points"] {
                    // The table names are constants; every value is bound.
                    let statement = format!("UPDATE {table} SET tenant = $1 WHERE tenant = $2");
                    let result = sqlx::query(sqlx::AssertSqlSafe(statement))
                        .bind(archived_as.as_str())
                        .bind(tenant.as_str())
                        .execute(&mut *transaction)
                        .await?;
                    moved.push(result.rows_affected());
                }
                let states = sqlx::query("DELETE FROM alert_states WHERE tenant = $1")
                    .bind(tenant.as_str())
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                for table in ["alert_fetches", "alert_control_states"] {
                    // The table names are constants; every value is bound.
                    let statement = format!("DELETE FROM {table} WHERE tenant = $1");
                    sqlx::query(sqlx::AssertSqlSafe(statement))
                        .bind(tenant.as_str())
                        .execute(&mut *transaction)
                        .await?;
                }
                let (points, events) = (moved[0], moved[1]);
                rebound.push(Rebound {
                    tenant: tenant.clone(),
                    previous: previous.clone(),
                    current: entra.clone(),
                    archived_as,
                    points,
                    events,
                    states,
                });
            }
        }
    }
    transaction.commit().await?;
    Ok(rebound)
}

/// Logs each new series at WARN: who, what was moved where, what was reset.
pub(super) fn log(rebound: &[Rebound]) {
    for rebound in rebound {
        tracing::warn!(
            tenant = %rebound.tenant,
            previous_entra_tenant = %rebound.previous,
            entra_tenant = %rebound.current,
            archived_as = %rebound.archived_as,
            points = rebound.points,
            events = rebound.events,
            alert_states = rebound.states,
            "history: this tenant id now names another Entra tenant: a new series starts; the \
             previous customer's history points and alert events are archived under \
             archived_as (not shown to anyone but the database), its alert states are reset \
             (no alert.resolved is sent) and the secure score is back-filled again"
        );
    }
}

/// Bindings waiting for the database, and the order between applying them and the store being
/// published: the writer publishes the store under this lock, after applying what waits, so
/// that nothing reads or writes a tenant's rows before its binding is applied.
#[derive(Debug, Default)]
pub(super) struct Gate {
    /// Bindings given before the database was connected.
    pending: tokio::sync::Mutex<Option<Vec<Binding>>>,
}

impl Gate {
    /// A gate with `bindings` waiting for the database.
    pub(super) fn new(bindings: Option<Vec<Binding>>) -> Self {
        Self {
            pending: tokio::sync::Mutex::new(bindings),
        }
    }

    /// Applies what waits to the freshly migrated `store`, then publishes it in `cell`.
    pub(super) async fn publish(
        &self,
        store: super::Store,
        cell: &std::sync::OnceLock<super::Store>,
    ) -> super::Store {
        let mut pending = self.pending.lock().await;
        if let Some(bindings) = pending.take() {
            apply_and_log(&store, &bindings).await;
        }
        cell.get_or_init(|| store).clone()
    }

    /// Applies `bindings` now when `cell` holds the store (and returns what was re-bound), or
    /// keeps them for when it does.
    pub(super) async fn bind(
        &self,
        bindings: Vec<Binding>,
        cell: &std::sync::OnceLock<super::Store>,
        before: impl std::future::Future<Output = ()>,
    ) -> Vec<Rebound> {
        let mut pending = self.pending.lock().await;
        match cell.get() {
            Some(store) => {
                before.await;
                apply_and_log(store, &bindings).await
            }
            None => {
                *pending = Some(bindings);
                Vec::new()
            }
        }
    }
}

/// [`apply`] at the wall clock's now, logged; a failure is logged and leaves the rows as they
/// are (tried again at the next reload or restart).
async fn apply_and_log(store: &super::Store, bindings: &[Binding]) -> Vec<Rebound> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match apply(store.pool(), bindings, now).await {
        Ok(rebound) => {
            log(&rebound);
            rebound
        }
        Err(error) => {
            tracing::warn!(
                "history: the tenants' Entra bindings could not be checked; tried again at the \
                 next reload or restart: {}",
                crate::telemetry::error_chain(&error)
            );
            Vec::new()
        }
    }
}
