//! Evaluation and transitions: one task takes readings, failures, ticks and reloads in order,
//! evaluates the rules they concern and writes each transition (state, event, outbox rows) in
//! one transaction.
//!
//! What each condition compares (`value` against `threshold` in events and the API):
//! `below`/`above` the score; `drop` the points lost since `within` ago; `drop_percent` the
//! percent lost; `stale_for` the seconds since the last success; `failing_for` the seconds since
//! the first failure of the current streak. A condition without the data it needs (no point
//! `within` ago; a pair never fetched) decides nothing: the state stays as it is.

use super::store::{self, FetchRow};
use super::{AlertError, AlertsConfig, Command, Condition, EventType, Rule, Shared};
use crate::history::Store;
use crate::model::Metric;
use crate::telemetry::{FailureLine, RepeatedFailures};
use sqlx::AnyPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Shortest time between two log lines about failing evaluations.
pub(super) const FAILURE_SUMMARY_PERIOD: Duration = Duration::from_secs(30);

/// What one rule decided for one tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Verdict {
    pub(super) firing: bool,
    pub(super) value: f64,
    pub(super) threshold: f64,
}

/// The engine task: waits for the database, then takes commands in order and runs the timer.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
    tick_period: Option<Duration>,
    stop: CancellationToken,
) {
    let store = loop {
        if let Ok(store) = shared.history.store() {
            break store.clone();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let mut ticks = tokio::time::interval(tick_period.unwrap_or(Duration::from_secs(86_400)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = RepeatedFailures::new(FAILURE_SUMMARY_PERIOD);
    loop {
        let command = tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick(), if tick_period.is_some() => Command::Tick(None),
            command = commands.recv() => match command {
                Some(command) => command,
                None => return,
            },
        };
        handle(&shared, &store, command, &mut failures).await;
    }
}

async fn handle(shared: &Shared, store: &Store, command: Command, failures: &mut RepeatedFailures) {
    let result = match command {
        Command::Reading {
            tenant,
            metric,
            value,
            at,
        } => on_reading(shared, store, &tenant, metric, value, at).await,
        Command::Failure { tenant, metric, at } => {
            on_failure(shared, store, &tenant, metric, at).await
        }
        Command::Controls { tenant, at, points } => {
            super::controls::on_controls(shared, store, &tenant, at, &points).await
        }
        Command::Tick(done) => {
            let result = tick(shared, store, (shared.clock)()).await;
            if let Some(done) = done {
                let _ = done.send(());
            }
            result
        }
        Command::Reload(config) => reload(shared, store, *config).await,
        Command::Flush(done) => {
            // Touches no database: says nothing about whether it works.
            let _ = done.send(());
            return;
        }
    };
    log_outcome(&result, failures, tokio::time::Instant::now());
}

/// Logs an evaluation's failure, summarised while the database keeps failing (one line per
/// reading would be hundreds a minute), and the first success after failures.
fn log_outcome(
    result: &Result<(), AlertError>,
    failures: &mut RepeatedFailures,
    now: tokio::time::Instant,
) {
    let error = match result {
        Ok(()) => {
            if let Some(count) = failures.succeeded() {
                tracing::info!("alerts: evaluation works again after {count} failure(s)");
            }
            return;
        }
        Err(error) => crate::telemetry::error_chain(error),
    };
    // Level conditions are evaluated again on the next reading or tick.
    match failures.failed(now) {
        FailureLine::First => tracing::warn!(
            "alerts: evaluation failed, retried with the next reading or tick (repeats are summarised every {} s): {error}",
            FAILURE_SUMMARY_PERIOD.as_secs()
        ),
        FailureLine::Summary { failures, seconds } => tracing::warn!(
            "alerts: evaluation failed {failures} more time(s) in the last {seconds} s; the latest: {error}"
        ),
        FailureLine::Quiet => {}
    }
}

/// A reading: the fetch outcome is recorded, then every rule of the metric covering the tenant
/// is evaluated (timed ones with `at` as now: a success resolves `stale_for`/`failing_for`).
pub(super) async fn on_reading(
    shared: &Shared,
    store: &Store,
    tenant: &str,
    metric: Metric,
    value: f64,
    at: OffsetDateTime,
) -> Result<(), AlertError> {
    let pool = store.pool();
    let seconds = at.unix_timestamp();
    store::record_fetch(pool, store::Fetched::Succeeded, tenant, metric, seconds).await?;
    let config = shared.config.read().clone();
    for rule in covering(&config, tenant, metric) {
        let verdict = match &rule.condition {
            Condition::Below(line) => Some(Verdict {
                firing: value < *line,
                value,
                threshold: *line,
            }),
            Condition::Above(line) => Some(Verdict {
                firing: value > *line,
                value,
                threshold: *line,
            }),
            Condition::Drop { points, within } => past(pool, tenant, metric, at, *within)
                .await?
                .map(|before| Verdict {
                    firing: before - value >= *points,
                    value: before - value,
                    threshold: *points,
                }),
            Condition::DropPercent { percent, within } => past(pool, tenant, metric, at, *within)
                .await?
                .filter(|before| *before > 0.0)
                .map(|before| {
                    let lost = (before - value) / before * 100.0;
                    Verdict {
                        firing: lost >= *percent,
                        value: lost,
                        threshold: *percent,
                    }
                }),
            Condition::StaleFor(_) | Condition::FailingFor(_) => {
                let fetch = store::fetch(pool, tenant, metric).await?;
                timed(&rule.condition, fetch, seconds)
            }
            // Evaluated on the tenant's controls (`Alerts::on_controls`), not on its score.
            Condition::ControlRegressed { .. } => None,
        };
        if let Some(verdict) = verdict {
            apply(shared, pool, &config, rule, tenant, verdict, None, at).await?;
        }
    }
    Ok(())
}

/// A failure: the failing streak starts (if none runs), then the timed rules are evaluated.
pub(super) async fn on_failure(
    shared: &Shared,
    store: &Store,
    tenant: &str,
    metric: Metric,
    at: OffsetDateTime,
) -> Result<(), AlertError> {
    let pool = store.pool();
    store::record_fetch(
        pool,
        store::Fetched::Failed,
        tenant,
        metric,
        at.unix_timestamp(),
    )
    .await?;
    let config = shared.config.read().clone();
    let fetch = store::fetch(pool, tenant, metric).await?;
    for rule in covering(&config, tenant, metric).filter(|rule| rule.condition.is_timed()) {
        if let Some(verdict) = timed(&rule.condition, fetch, at.unix_timestamp()) {
            apply(shared, pool, &config, rule, tenant, verdict, None, at).await?;
        }
    }
    Ok(())
}

/// The timer: every timed rule, for every pair in its scope fetched at least once.
pub(super) async fn tick(
    shared: &Shared,
    store: &Store,
    now: OffsetDateTime,
) -> Result<(), AlertError> {
    let pool = store.pool();
    let config = shared.config.read().clone();
    for rule in config.rules.iter().filter(|rule| rule.condition.is_timed()) {
        for (tenant, fetch) in store::fetches(pool, rule.metric).await? {
            if !rule.tenants.contains(&tenant) {
                continue;
            }
            if let Some(verdict) = timed(&rule.condition, fetch, now.unix_timestamp()) {
                apply(shared, pool, &config, rule, &tenant, verdict, None, now).await?;
            }
        }
    }
    Ok(())
}

/// A reload: the new rules are in force at once; states of removed or changed rules, and of
/// tenants a rule no longer covers, are resolved (an event if firing) and deleted.
async fn reload(shared: &Shared, store: &Store, config: AlertsConfig) -> Result<(), AlertError> {
    let pool = store.pool();
    let old = std::mem::replace(&mut *shared.config.write(), Arc::new(config));
    let new = shared.config.read().clone();
    let now = (shared.clock)();
    for state in store::states(pool).await? {
        let rule = new.rules.iter().find(|rule| rule.name == state.alert);
        let keep = rule.is_some_and(|rule| {
            rule.fingerprint() == state.rule && rule.tenants.contains(&state.tenant)
        });
        if keep {
            continue;
        }
        // The endpoints that were sent the firing hear that it ended, and only they (one
        // added by this reload never saw it); a state from before they were kept goes to the
        // endpoints that took the alert before the reload.
        let endpoints = resolve_endpoints(&new, &state, |name| {
            old.webhook(name)
                .is_some_and(|before| before.receives(&state.alert))
        });
        let mut transaction = pool.begin().await?;
        let mut event = false;
        if state.firing {
            let resolved = sqlx::query(
                "UPDATE alert_states SET state = 'ok' WHERE alert = $1 AND tenant = $2 \
                 AND state = 'firing'",
            )
            .bind(state.alert.as_str())
            .bind(state.tenant.as_str())
            .execute(&mut *transaction)
            .await?;
            if resolved.rows_affected() == 1 {
                let metric = Metric::parse(&state.metric).unwrap_or(Metric::Device);
                let verdict = Verdict {
                    firing: false,
                    value: state.value.unwrap_or(f64::NAN),
                    threshold: state.threshold.unwrap_or(f64::NAN),
                };
                write_event(
                    &mut transaction,
                    EventType::Resolved,
                    &state.alert,
                    &state.tenant,
                    metric,
                    verdict,
                    None,
                    now,
                    &endpoints,
                )
                .await?;
                event = true;
            }
        }
        sqlx::query("DELETE FROM alert_states WHERE alert = $1 AND tenant = $2")
            .bind(state.alert.as_str())
            .bind(state.tenant.as_str())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        if event {
            shared
                .metrics
                .event(&state.alert, EventType::Resolved.as_str());
            shared.wake.notify_waiters();
        }
    }
    super::controls::forget_stale(pool, &new).await
}

/// Where the resolve of firing `state` goes: the endpoints its firing was queued for that
/// `config` still has. For a state written before those were kept: the endpoints that take the
/// alert now, or `took_it` (by name) before a reload.
fn resolve_endpoints(
    config: &AlertsConfig,
    state: &store::StateRow,
    took_it: impl Fn(&str) -> bool,
) -> Vec<String> {
    config
        .webhooks
        .iter()
        .filter(|webhook| match &state.endpoints {
            Some(sent) => sent.contains(&webhook.name),
            None => webhook.receives(&state.alert) || took_it(&webhook.name),
        })
        .map(|webhook| webhook.name.clone())
        .collect()
}

/// The rules of `metric` that cover `tenant`.
pub(super) fn covering<'a>(
    config: &'a AlertsConfig,
    tenant: &'a str,
    metric: Metric,
) -> impl Iterator<Item = &'a Rule> {
    config
        .rules
        .iter()
        .filter(move |rule| rule.metric == metric && rule.tenants.contains(tenant))
}

/// The score `within` before `at`, from the history.
async fn past(
    pool: &AnyPool,
    tenant: &str,
    metric: Metric,
    at: OffsetDateTime,
    within: Duration,
) -> Result<Option<f64>, AlertError> {
    let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
    store::value_at(
        pool,
        tenant,
        metric,
        at.unix_timestamp().saturating_sub(within),
    )
    .await
}

/// A timed condition at `now` (Unix seconds), from the pair's fetch outcomes.
pub(super) fn timed(condition: &Condition, fetch: FetchRow, now: i64) -> Option<Verdict> {
    let seconds = |after: &Duration| i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
    match condition {
        Condition::StaleFor(after) => {
            // A pair that never succeeded is stale since its first failure.
            let since = fetch.last_success.or(fetch.first_failure)?;
            let age = now.saturating_sub(since).max(0);
            Some(Verdict {
                firing: age >= seconds(after),
                value: age as f64,
                threshold: seconds(after) as f64,
            })
        }
        Condition::FailingFor(after) => {
            let failing = fetch
                .first_failure
                .map_or(0, |first| now.saturating_sub(first).max(0));
            Some(Verdict {
                firing: fetch.first_failure.is_some() && failing >= seconds(after),
                value: failing as f64,
                threshold: seconds(after) as f64,
            })
        }
        _ => None,
    }
}

/// Writes the transition `verdict` asks for, if the stored state differs: the state, the
/// event and its outbox rows in one transaction. The write is conditional, so of two processes
/// evaluating the same change only one writes an event. `control` is named in the event
/// (`control_regressed`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply(
    shared: &Shared,
    pool: &AnyPool,
    config: &AlertsConfig,
    rule: &Rule,
    tenant: &str,
    verdict: Verdict,
    control: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), AlertError> {
    let current = store::state(pool, &rule.name, tenant).await?;
    let firing_now = current.as_ref().is_some_and(|state| state.firing);
    if firing_now == verdict.firing {
        return Ok(());
    }
    let endpoints: Vec<String> = match &current {
        // A resolve goes to the endpoints that were sent the firing.
        Some(state) if !verdict.firing => resolve_endpoints(config, state, |_| false),
        _ => config
            .webhooks
            .iter()
            .filter(|webhook| webhook.receives(&rule.name))
            .map(|webhook| webhook.name.clone())
            .collect(),
    };
    let mut transaction = pool.begin().await?;
    let changed = if verdict.firing {
        sqlx::query(
            "INSERT INTO alert_states (alert, tenant, metric, state, since, value, threshold, rule, \
             endpoints) VALUES ($1, $2, $3, 'firing', $4, $5, $6, $7, $8) \
             ON CONFLICT (alert, tenant) DO UPDATE SET state = 'firing', since = excluded.since, \
             value = excluded.value, threshold = excluded.threshold, rule = excluded.rule, \
             metric = excluded.metric, endpoints = excluded.endpoints \
             WHERE alert_states.state <> 'firing'",
        )
    } else {
        sqlx::query(
            "UPDATE alert_states SET state = 'ok', since = $4, value = $5, threshold = $6, \
             rule = $7, metric = $3 WHERE alert = $1 AND tenant = $2 AND state = 'firing'",
        )
    }
    .bind(rule.name.as_str())
    .bind(tenant)
    .bind(rule.metric.as_str())
    .bind(now.unix_timestamp())
    .bind(verdict.value)
    .bind(verdict.threshold)
    .bind(rule.fingerprint());
    let changed = if verdict.firing {
        changed.bind(serde_json::json!(endpoints).to_string())
    } else {
        changed
    }
    .execute(&mut *transaction)
    .await?;
    if changed.rows_affected() != 1 {
        // Another process wrote this transition first.
        transaction.rollback().await?;
        return Ok(());
    }
    let kind = if verdict.firing {
        EventType::Firing
    } else {
        EventType::Resolved
    };
    write_event(
        &mut transaction,
        kind,
        &rule.name,
        tenant,
        rule.metric,
        verdict,
        control,
        now,
        &endpoints,
    )
    .await?;
    transaction.commit().await?;
    shared.metrics.event(&rule.name, kind.as_str());
    tracing::info!(
        alert = %rule.name,
        tenant,
        metric = rule.metric.as_str(),
        value = verdict.value,
        threshold = verdict.threshold,
        "{}",
        kind.as_str()
    );
    shared.wake.notify_waiters();
    Ok(())
}

/// Inserts the event and one pending outbox row per endpoint, due now.
#[allow(clippy::too_many_arguments)]
async fn write_event(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    kind: EventType,
    alert: &str,
    tenant: &str,
    metric: Metric,
    verdict: Verdict,
    control: Option<&str>,
    now: OffsetDateTime,
    endpoints: &[String],
) -> Result<(), AlertError> {
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let number = |value: f64| value.is_finite().then_some(value);
    let mut body = serde_json::json!({
        "type": kind.as_str(),
        "timestamp": rfc3339(now),
        "data": {
            "alert": alert,
            "tenant": tenant,
            "metric": metric.as_str(),
            "value": number(verdict.value),
            "threshold": number(verdict.threshold),
            "since": rfc3339(now),
        }
    });
    if let Some(control) = control {
        body["data"]["control"] = serde_json::json!(control);
    }
    let body = body.to_string();
    let at = now.unix_timestamp();
    sqlx::query(
        "INSERT INTO alert_events (id, type, alert, tenant, metric, value, threshold, since, at, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id.as_str())
    .bind(kind.as_str())
    .bind(alert)
    .bind(tenant)
    .bind(metric.as_str())
    .bind(number(verdict.value))
    .bind(number(verdict.threshold))
    .bind(at)
    .bind(at)
    .bind(body)
    .execute(&mut **transaction)
    .await?;
    let mut seen = HashSet::new();
    for endpoint in endpoints.iter().filter(|name| seen.insert(name.as_str())) {
        sqlx::query(
            "INSERT INTO webhook_deliveries (message_id, event_id, webhook, status, attempts, \
             next_attempt, claimed_until, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', 0, $4, 0, $4, $4)",
        )
        // Time first, so that the outbox lists (ordered by this id) are chronological.
        .bind(format!(
            "msg_{:010x}{}",
            at.max(0),
            uuid::Uuid::new_v4().simple()
        ))
        .bind(id.as_str())
        .bind(endpoint.as_str())
        .bind(at)
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

/// RFC 3339 in UTC, to the second.
pub(super) fn rfc3339(at: OffsetDateTime) -> String {
    use time::format_description::well_known::Rfc3339;
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}
