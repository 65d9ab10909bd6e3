//! The SQL of alerts over the history database's pool: the same statements for SQLite and
//! PostgreSQL (`$n` parameters, `ON CONFLICT … DO UPDATE … WHERE`, `RETURNING`, Unix seconds),
//! except the claim of due deliveries, which adds `FOR UPDATE SKIP LOCKED` on PostgreSQL.

use super::{
    AlertError, AlertEvent, Delivery, DeliveryStatus, EventFilter, EventType, FiringAlert,
};
use crate::model::Metric;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use time::OffsetDateTime;

/// The state of one (alert, tenant) as stored.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StateRow {
    pub(super) alert: String,
    pub(super) tenant: String,
    pub(super) metric: String,
    pub(super) firing: bool,
    pub(super) value: Option<f64>,
    pub(super) threshold: Option<f64>,
    pub(super) rule: String,
    /// The endpoints the firing event was queued for; `None` for a state written before they
    /// were kept (or not firing).
    pub(super) endpoints: Option<Vec<String>>,
}

/// The fetch outcomes of one (tenant, metric) as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct FetchRow {
    pub(super) last_success: Option<i64>,
    pub(super) first_failure: Option<i64>,
}

impl FetchRow {
    /// The outcomes in a row that selected `last_success` and `first_failure`.
    fn read(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            last_success: row.try_get("last_success")?,
            first_failure: row.try_get("first_failure")?,
        })
    }
}

pub(super) fn time(seconds: i64) -> Result<OffsetDateTime, AlertError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| AlertError::Corrupt(format!("time {seconds} out of range")))
}

fn metric(text: &str) -> Result<Metric, AlertError> {
    Metric::parse(text).ok_or_else(|| AlertError::Corrupt(format!("unknown metric {text:?}")))
}

/// The stored state of (alert, tenant), if any.
pub(super) async fn state(
    pool: &AnyPool,
    alert: &str,
    tenant: &str,
) -> Result<Option<StateRow>, AlertError> {
    let row = sqlx::query(
        "SELECT alert, tenant, metric, state, value, threshold, rule, endpoints \
         FROM alert_states WHERE alert = $1 AND tenant = $2",
    )
    .bind(alert)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(state_row).transpose()
}

fn state_row(row: &AnyRow) -> Result<StateRow, AlertError> {
    let state: String = row.try_get("state")?;
    Ok(StateRow {
        alert: row.try_get("alert")?,
        tenant: row.try_get("tenant")?,
        metric: row.try_get("metric")?,
        firing: state == "firing",
        value: row.try_get("value")?,
        threshold: row.try_get("threshold")?,
        rule: row.try_get("rule")?,
        // Unreadable (written by hand?) counts as unknown: the resolve still goes out.
        endpoints: row
            .try_get::<Option<String>, _>("endpoints")?
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}

/// Every stored state (for a reload).
pub(super) async fn states(pool: &AnyPool) -> Result<Vec<StateRow>, AlertError> {
    let rows = sqlx::query(
        "SELECT alert, tenant, metric, state, value, threshold, rule, endpoints FROM alert_states",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(state_row).collect()
}

/// How a fetch of (tenant, metric) ended, for [`record_fetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetched {
    /// A reading: the last success moves forward (never back: readings may arrive out of
    /// order), and the failing streak ends.
    Succeeded,
    /// A failure: starts the failing streak unless one is running.
    Failed,
}

/// Records how a fetch of (tenant, metric) ended at `at` (Unix seconds).
pub(super) async fn record_fetch(
    pool: &AnyPool,
    fetched: Fetched,
    tenant: &str,
    metric: Metric,
    at: i64,
) -> Result<(), AlertError> {
    let upsert = match fetched {
        Fetched::Succeeded => {
            "INSERT INTO alert_fetches (tenant, metric, last_success, first_failure) \
             VALUES ($1, $2, $3, NULL) ON CONFLICT (tenant, metric) DO UPDATE SET \
             last_success = CASE WHEN alert_fetches.last_success IS NULL \
                 OR excluded.last_success > alert_fetches.last_success \
                 THEN excluded.last_success ELSE alert_fetches.last_success END, \
             first_failure = NULL"
        }
        Fetched::Failed => {
            "INSERT INTO alert_fetches (tenant, metric, last_success, first_failure) \
             VALUES ($1, $2, NULL, $3) ON CONFLICT (tenant, metric) DO UPDATE SET \
             first_failure = CASE WHEN alert_fetches.first_failure IS NULL \
                 THEN excluded.first_failure ELSE alert_fetches.first_failure END"
        }
    };
    sqlx::query(upsert)
        .bind(tenant)
        .bind(metric.as_str())
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every (tenant, fetch outcomes) of `metric` seen so far.
pub(super) async fn fetches(
    pool: &AnyPool,
    metric: Metric,
) -> Result<Vec<(String, FetchRow)>, AlertError> {
    let rows = sqlx::query(
        "SELECT tenant, last_success, first_failure FROM alert_fetches WHERE metric = $1",
    )
    .bind(metric.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("tenant")?, FetchRow::read(row)?)))
        .collect()
}

/// The fetch outcomes of (tenant, metric).
pub(super) async fn fetch(
    pool: &AnyPool,
    tenant: &str,
    metric: Metric,
) -> Result<FetchRow, AlertError> {
    let row = sqlx::query(
        "SELECT last_success, first_failure FROM alert_fetches WHERE tenant = $1 AND metric = $2",
    )
    .bind(tenant)
    .bind(metric.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(row) => FetchRow::read(&row)?,
        None => FetchRow::default(),
    })
}

/// The tenant's score at `before` (Unix seconds): the last point of the history whose bucket
/// started then or earlier (hour resolution, days after 30 days).
pub(super) async fn value_at(
    pool: &AnyPool,
    tenant: &str,
    metric: Metric,
    before: i64,
) -> Result<Option<f64>, AlertError> {
    let row = sqlx::query(
        "SELECT last FROM history_points WHERE tenant = $1 AND metric = $2 AND at <= $3 \
         ORDER BY at DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(metric.as_str())
    .bind(before)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| row.try_get("last")).transpose()?)
}

/// Every (alert, tenant) firing now.
pub(super) async fn firing(pool: &AnyPool) -> Result<Vec<FiringAlert>, AlertError> {
    let rows = sqlx::query(
        "SELECT alert, tenant, metric, since, value, threshold FROM alert_states \
         WHERE state = 'firing' ORDER BY alert, tenant",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let name: String = row.try_get("metric")?;
            Ok(FiringAlert {
                alert: row.try_get("alert")?,
                tenant: row.try_get("tenant")?,
                metric: metric(&name)?,
                since: time(row.try_get("since")?)?,
                value: row.try_get("value")?,
                threshold: row.try_get("threshold")?,
            })
        })
        .collect()
}

/// Events matching `filter`, oldest first, each with its position.
pub(super) async fn events(
    pool: &AnyPool,
    filter: &EventFilter,
) -> Result<Vec<(i64, AlertEvent)>, AlertError> {
    let mut sql = String::from(
        "SELECT seq, id, type, alert, tenant, metric, value, threshold, since, at, body \
         FROM alert_events WHERE seq > $1 AND at >= $2",
    );
    let mut next = 3;
    if filter.alert.is_some() {
        sql.push_str(&format!(" AND alert = ${next}"));
        next += 1;
    }
    if filter.tenant.is_some() {
        sql.push_str(&format!(" AND tenant = ${next}"));
        next += 1;
    }
    if let Some(visible) = &filter.visible {
        if visible.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (0..visible.len())
            .map(|index| format!("${}", next + index))
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(" AND tenant IN ({placeholders})"));
        next += visible.len();
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT ${next}"));
    // Built from placeholders only; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.after.unwrap_or(0))
        .bind(
            filter
                .since
                .map_or(i64::MIN, OffsetDateTime::unix_timestamp),
        );
    if let Some(alert) = &filter.alert {
        query = query.bind(alert.as_str());
    }
    if let Some(tenant) = &filter.tenant {
        query = query.bind(tenant.as_str());
    }
    for tenant in filter.visible.iter().flatten() {
        query = query.bind(tenant.as_str());
    }
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let rows = query.bind(limit).fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("type")?;
            let name: String = row.try_get("metric")?;
            Ok((
                row.try_get("seq")?,
                AlertEvent {
                    id: row.try_get("id")?,
                    kind: EventType::parse(&kind)
                        .ok_or_else(|| AlertError::Corrupt(format!("event type {kind:?}")))?,
                    alert: row.try_get("alert")?,
                    tenant: row.try_get("tenant")?,
                    metric: metric(&name)?,
                    value: row.try_get("value")?,
                    threshold: row.try_get("threshold")?,
                    since: time(row.try_get("since")?)?,
                    at: time(row.try_get("at")?)?,
                    control: control_of(&row.try_get::<String, _>("body")?),
                },
            ))
        })
        .collect()
}

/// The control an event's body names (`control_regressed`), if any.
fn control_of(body: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(body.get("data")?.get("control")?.as_str()?.to_owned())
}

/// Outbox rows with `status` (any when `None`), ordered by `webhook-id`, after `after`.
pub(super) async fn deliveries(
    pool: &AnyPool,
    status: Option<DeliveryStatus>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>, AlertError> {
    let rows = sqlx::query(
        "SELECT message_id, event_id, webhook, status, attempts, next_attempt, last_status, \
         last_error, created_at FROM webhook_deliveries \
         WHERE ($1 = '' OR status = $1) AND message_id > $2 ORDER BY message_id LIMIT $3",
    )
    .bind(status.map_or("", DeliveryStatus::as_str))
    .bind(after.unwrap_or(""))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let status = DeliveryStatus::parse(&status)
                .ok_or_else(|| AlertError::Corrupt(format!("delivery status {status:?}")))?;
            Ok(Delivery {
                webhook_id: row.try_get("message_id")?,
                event_id: row.try_get("event_id")?,
                webhook: row.try_get("webhook")?,
                status,
                attempts: row.try_get("attempts")?,
                last_status: row.try_get("last_status")?,
                last_error: row.try_get("last_error")?,
                next_attempt: match status {
                    DeliveryStatus::Pending => Some(time(row.try_get("next_attempt")?)?),
                    _ => None,
                },
                created_at: time(row.try_get("created_at")?)?,
            })
        })
        .collect()
}

/// Pending rows now: how many, and the oldest's creation (for the outbox gauges).
pub(super) async fn outbox_depth(pool: &AnyPool) -> Result<(i64, Option<i64>), AlertError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS depth, MIN(created_at) AS oldest FROM webhook_deliveries \
         WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("depth")?, row.try_get("oldest")?))
}

/// Deletes finished (delivered or failed) outbox rows last updated before `cutoff` (Unix
/// seconds), then events before it that no remaining row sends: a pending delivery keeps its
/// event. Returns (events, deliveries) deleted.
pub(super) async fn enforce_retention(
    pool: &AnyPool,
    cutoff: i64,
) -> Result<(u64, u64), AlertError> {
    let deliveries =
        sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected();
    let events = sqlx::query(
        "DELETE FROM alert_events WHERE at < $1 \
         AND id NOT IN (SELECT event_id FROM webhook_deliveries)",
    )
    .bind(cutoff)
    .execute(pool)
    .await?
    .rows_affected();
    Ok((events, deliveries))
}
