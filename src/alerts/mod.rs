//! Alerts: rules over each tenant's metrics (`[[alerts]]`), their state per (alert, tenant),
//! and the events of each change delivered as signed webhooks (`[[webhooks]]`) that are never
//! lost (`docs/api/alerts.md`).
//!
//! Owns the rules' evaluation, the state and event tables and the webhook outbox (in the history
//! database, migration `0002_alerts.sql`), the delivery workers and the Standard Webhooks
//! signature. It does not fetch anything: the fetch path reports each outcome through
//! [`Alerts::on_reading`] and [`Alerts::on_failure`], and a timer evaluates the conditions that
//! depend on time passing (`stale_for`, `failing_for`); a tenant's controls arrive through
//! [`Alerts::on_controls`] (`control_regressed`).
//!
//! # Layout
//!
//! - this file: the error, the views the API serves, and [`Alerts`], the one handle the
//!   gateway holds (a queue in front of one engine task, and the delivery workers).
//! - `rules`: the resolved configuration ([`AlertsConfig`], [`Rule`], [`Condition`],
//!   [`Webhook`], [`WebhookSecret`]).
//! - `store`: the SQL over the history database's pool (both engines).
//! - `controls`: `control_regressed`, evaluated on a tenant's controls
//!   ([`Alerts::on_controls`]), with what it remembers per (alert, tenant).
//! - `engine`: evaluation and transitions: one transaction writes the new state, the event
//!   and one outbox row per matching endpoint.
//! - `delivery`: claiming due outbox rows, attempts, back-off, and the signature.
//! - `address`: which addresses a delivery may reach (public only by default), checked on the
//!   URL and by the resolver of the client that connects.
//! - `receiver`: a local receiver that verifies signatures and logs events (demo and tests).
//!
//! # Consistency
//!
//! A transition is a conditional write (`… WHERE state <> 'firing'`): whichever process wins
//! writes the event; another one evaluating the same reading writes nothing. Events therefore
//! happen once, across restarts and replicas. Deliveries are at least once: a row is claimed
//! with a lease (`claimed_until`) and, on PostgreSQL, `FOR UPDATE SKIP LOCKED`, so one replica
//! attempts it; a replica that dies mid-attempt leaves a lease that expires, and the row is
//! attempted again with the same `webhook-id` (receivers deduplicate on it).

mod address;
mod controls;
mod delivery;
mod engine;
#[cfg(feature = "emulator")]
mod receiver;
mod rules;
mod store;

pub use address::{Reach, RefusedAddress, WebhookClients};
pub use delivery::{sign, DeliveryOutcome};
#[cfg(feature = "emulator")]
pub use receiver::{LoggingReceiver, ReceivedEvent};
pub use rules::{AlertsConfig, Condition, Rule, Webhook, WebhookSecret};

use crate::history::{ControlPoint, History, HistoryError};
use crate::metrics::AlertMetrics;
use crate::model::Metric;
use parking_lot::RwLock;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// "Now", as the engine and the delivery workers read it (tests move it).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// How often the timer evaluates `stale_for` and `failing_for`.
pub const TICK_PERIOD: Duration = Duration::from_secs(30);
/// How often an idle delivery worker looks for due rows (rows written by another replica, or
/// retries coming due); a new event wakes the workers at once.
pub const POLL_PERIOD: Duration = Duration::from_secs(1);
/// Readings and failures waiting for the engine, at most: beyond it they are dropped (counted,
/// logged), never waited for by the fetch path.
pub const QUEUE: usize = 10_000;
/// Default `[[webhooks]] timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Why an alert operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The history database is off, not connected yet, or failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A statement failed.
    #[error("the alerts tables could not be read or written")]
    Database(#[source] sqlx::Error),
    /// A stored row holds something this version does not know.
    #[error("a stored alert row is not valid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for AlertError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// The two event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub enum EventType {
    /// The (alert, tenant) started firing.
    #[serde(rename = "alert.firing")]
    Firing,
    /// The (alert, tenant) stopped firing.
    #[serde(rename = "alert.resolved")]
    Resolved,
}

impl EventType {
    /// Both, for metrics registered at 0.
    pub const ALL: [Self; 2] = [Self::Firing, Self::Resolved];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "alert.firing",
            Self::Resolved => "alert.resolved",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// An (alert, tenant) firing now (`GET /alerts`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct FiringAlert {
    /// The rule's name.
    pub alert: String,
    /// The gateway's tenant id.
    pub tenant: String,
    /// The metric the rule watches.
    pub metric: Metric,
    /// When it started firing (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T09:00:00Z")]
    pub since: OffsetDateTime,
    /// The value that made it fire, in the rule's unit: the score, the points or percent lost,
    /// or the seconds without success.
    pub value: Option<f64>,
    /// The rule's threshold, in the same unit.
    pub threshold: Option<f64>,
}

/// A transition (`GET /alerts/events`), and the `data` of a webhook's body.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AlertEvent {
    /// The event's id (`evt_…`).
    pub id: String,
    /// `alert.firing` or `alert.resolved`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The rule's name.
    pub alert: String,
    /// The gateway's tenant id.
    pub tenant: String,
    /// The metric.
    pub metric: Metric,
    /// The value compared at the transition.
    pub value: Option<f64>,
    /// The threshold it was compared with.
    pub threshold: Option<f64>,
    /// When the new state began (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T09:00:00Z")]
    pub since: OffsetDateTime,
    /// When the event was written (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T09:00:00Z")]
    pub at: OffsetDateTime,
    /// The control that regressed (firing) or was done again (resolved): `control_regressed`
    /// rules only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// A delivery's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted again at `next_attempt`.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Given up: a 4xx other than 408/429, 24 h of retries, or the endpoint was removed.
    Failed,
}

impl DeliveryStatus {
    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The status named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One outbox row (`GET /webhooks/deliveries`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header, the same on every attempt.
    pub webhook_id: String,
    /// The event delivered.
    pub event_id: String,
    /// The endpoint's name.
    pub webhook: String,
    /// `pending`, `delivered` or `failed`.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<i64>,
    /// Why the last attempt did not deliver (no secret or body in it).
    pub last_error: Option<String>,
    /// When it is attempted next (pending only; RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-11-28T09:00:05Z")]
    pub next_attempt: Option<OffsetDateTime>,
    /// When the event was written to the outbox (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T09:00:00Z")]
    pub created_at: OffsetDateTime,
}

/// Filters of [`Alerts::events`].
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Of this rule only.
    pub alert: Option<String>,
    /// Of this tenant only.
    pub tenant: Option<String>,
    /// The tenants the caller may see; `None` for every tenant.
    pub visible: Option<Vec<String>>,
    /// After this position (from the previous page's cursor).
    pub after: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// What the engine task is asked, in order.
enum Command {
    Reading {
        tenant: String,
        metric: Metric,
        value: f64,
        at: OffsetDateTime,
    },
    Failure {
        tenant: String,
        metric: Metric,
        at: OffsetDateTime,
    },
    Controls {
        tenant: String,
        at: OffsetDateTime,
        points: Vec<ControlPoint>,
    },
    Tick(Option<oneshot::Sender<()>>),
    Reload(Box<AlertsConfig>),
    Flush(oneshot::Sender<()>),
}

/// Timing of [`Alerts::start_with`] (tests shorten or stop the periods and move the clock).
#[derive(Clone)]
pub struct Options {
    /// "Now".
    pub clock: Clock,
    /// How often the timer runs; `None` for never (tests call [`Alerts::tick`]).
    pub tick_period: Option<Duration>,
    /// How often idle delivery workers look for due rows; `None` for never (tests call
    /// [`Alerts::deliver_due`]).
    pub poll_period: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(OffsetDateTime::now_utc),
            tick_period: Some(TICK_PERIOD),
            poll_period: Some(POLL_PERIOD),
        }
    }
}

/// State shared by the handle, the engine task and the delivery workers.
struct Shared {
    history: Arc<History>,
    config: RwLock<Arc<AlertsConfig>>,
    metrics: AlertMetrics,
    clock: Clock,
    /// Woken when events are written: the delivery workers look at once.
    wake: Notify,
    /// The webhook clients, one per [`Reach`] (each refuses the addresses out of its reach).
    http: WebhookClients,
}

/// The gateway's handle on alerts. Built once ([`Alerts::start`]) beside the history; dropping
/// it stops its tasks (deliveries in progress are attempted again after their lease).
pub struct Alerts {
    shared: Arc<Shared>,
    sender: mpsc::Sender<Command>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self.shared.config.read();
        f.debug_struct("Alerts")
            .field("rules", &config.rules.len())
            .field("webhooks", &config.webhooks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Alerts {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Alerts {
    /// Starts the engine task, the timer and the delivery workers on `runtime`, with the wall
    /// clock. `http` are the webhook clients (built from [`crate::upstream::webhook_client`]:
    /// the gateway's TLS roots, no redirects followed); each attempt sets its own timeout.
    pub fn start(
        config: AlertsConfig,
        history: Arc<History>,
        http: WebhookClients,
        metrics: AlertMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        Self::start_with(config, history, http, metrics, runtime, Options::default())
    }

    /// [`Alerts::start`] with its clock and periods.
    pub fn start_with(
        config: AlertsConfig,
        history: Arc<History>,
        http: WebhookClients,
        metrics: AlertMetrics,
        runtime: &tokio::runtime::Handle,
        options: Options,
    ) -> Self {
        metrics.register_alerts(config.rules.iter().map(|rule| rule.name.as_str()));
        let shared = Arc::new(Shared {
            history,
            config: RwLock::new(Arc::new(config)),
            metrics,
            clock: options.clock.clone(),
            wake: Notify::new(),
            http,
        });
        let stop = CancellationToken::new();
        let (sender, receiver) = mpsc::channel(QUEUE);
        runtime.spawn(engine::run(
            shared.clone(),
            receiver,
            options.tick_period,
            stop.clone(),
        ));
        runtime.spawn(delivery::supervise(
            shared.clone(),
            options.poll_period,
            stop.clone(),
        ));
        // Beside the timer: tests that drive the timer themselves call `enforce_retention`.
        if options.tick_period.is_some() {
            runtime.spawn(retain(shared.clone(), stop.clone()));
        }
        Self {
            shared,
            sender,
            stop,
        }
    }

    /// A successful fetch of `metric` for `tenant` read `value` at `at`. Never waits and never
    /// fails: the reading is queued for the engine (dropped and counted when the queue is full).
    pub fn on_reading(&self, tenant: &str, metric: Metric, value: f64, at: OffsetDateTime) {
        if !value.is_finite() {
            return;
        }
        self.send(Command::Reading {
            tenant: tenant.to_owned(),
            metric,
            value,
            at,
        });
    }

    /// A fetch of `metric` for `tenant` failed at `at` (after its retries). Never waits.
    pub fn on_failure(&self, tenant: &str, metric: Metric, at: OffsetDateTime) {
        self.send(Command::Failure {
            tenant: tenant.to_owned(),
            metric,
            at,
        });
    }

    /// A tenant's controls read at `at` (a new secure score snapshot joined with its
    /// profiles): the `control_regressed` rules covering the tenant are evaluated. Never waits
    /// and never fails, like [`Alerts::on_reading`]; nothing is queued when no such rule
    /// covers the tenant.
    pub fn on_controls(&self, tenant: &str, at: OffsetDateTime, points: &[ControlPoint]) {
        let watched = self.shared.config.read().rules.iter().any(|rule| {
            matches!(rule.condition, Condition::ControlRegressed { .. })
                && rule.tenants.contains(tenant)
        });
        if !watched {
            return;
        }
        self.send(Command::Controls {
            tenant: tenant.to_owned(),
            at,
            points: points.to_vec(),
        });
    }

    /// Swaps in the rules and endpoints of a reloaded configuration. States of rules that were
    /// removed, changed, or no longer cover a tenant are resolved (an `alert.resolved` event if
    /// they were firing) and dropped, in order with the readings queued before.
    pub fn reload(&self, config: AlertsConfig) {
        self.shared
            .metrics
            .register_alerts(config.rules.iter().map(|rule| rule.name.as_str()));
        self.send(Command::Reload(Box::new(config)));
    }

    /// Evaluates `stale_for` and `failing_for` now (the clock's now) and waits until done.
    pub async fn tick(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Command::Tick(Some(done)));
        let _ = wait.await;
    }

    /// Waits until everything queued before this call is evaluated.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Command::Flush(done));
        let _ = wait.await;
    }

    /// Attempts every due delivery of every endpoint now (the clock's now) and waits for the
    /// answers; returns the attempts made. The workers do this on their own; tests call it.
    pub async fn deliver_due(&self) -> Result<usize, AlertError> {
        let config = self.shared.config.read().clone();
        let mut attempts = 0;
        for webhook in &config.webhooks {
            attempts += delivery::deliver_due(&self.shared, &webhook.name).await?;
        }
        Ok(attempts)
    }

    /// Deletes alert events and finished webhook deliveries older than
    /// [`History::alerts_retention_days`] before the clock's now (pending deliveries and their
    /// events stay); returns (events, deliveries) deleted. An hourly job does this on its own.
    pub async fn enforce_retention(&self) -> Result<(u64, u64), AlertError> {
        enforce_retention(&self.shared).await
    }

    /// The (alert, tenant) pairs firing now among `visible` tenants (`None`: every tenant).
    pub async fn firing(
        &self,
        visible: Option<&BTreeSet<String>>,
    ) -> Result<Vec<FiringAlert>, AlertError> {
        let store = self.shared.history.store()?;
        let all = store::firing(store.pool()).await?;
        Ok(all
            .into_iter()
            .filter(|alert| visible.is_none_or(|tenants| tenants.contains(&alert.tenant)))
            .collect())
    }

    /// Transitions, oldest first, with the position of the last one (for the next page).
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<(i64, AlertEvent)>, AlertError> {
        let store = self.shared.history.store()?;
        store::events(store.pool(), filter).await
    }

    /// Outbox rows, oldest first, after position `after`, at most `limit`.
    pub async fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Delivery>, AlertError> {
        let store = self.shared.history.store()?;
        store::deliveries(store.pool(), status, after.as_deref(), limit).await
    }

    /// The rules and endpoints in force.
    pub fn config(&self) -> Arc<AlertsConfig> {
        self.shared.config.read().clone()
    }

    fn send(&self, command: Command) {
        match self.sender.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.metrics.dropped.inc();
                tracing::warn!(
                    "alerts: the engine's queue is full (the history database is slow or away); \
                     a reading was not evaluated (counted in scoregate_alert_readings_dropped)"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The retention of events and deliveries, as of the clock's now.
async fn enforce_retention(shared: &Shared) -> Result<(u64, u64), AlertError> {
    let store = shared.history.store()?;
    let cutoff =
        crate::history::retention_start((shared.clock)(), shared.history.alerts_retention_days());
    store::enforce_retention(store.pool(), cutoff).await
}

/// The hourly retention job (with the history's roll-up period), from the moment the
/// database is connected.
async fn retain(shared: Arc<Shared>, stop: CancellationToken) {
    while shared.history.store().is_err() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let mut ticks = tokio::time::interval(crate::history::MAINTENANCE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match enforce_retention(&shared).await {
            Ok((events, deliveries)) if events > 0 || deliveries > 0 => tracing::info!(
                events,
                deliveries,
                "alerts: events and finished deliveries past retention deleted"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                "alerts: retention not applied, retried next hour: {}",
                crate::telemetry::error_chain(&error)
            ),
        }
    }
}

#[cfg(test)]
mod tests;
