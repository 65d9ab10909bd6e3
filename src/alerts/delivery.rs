//! Webhook delivery: one worker per endpoint claims its due outbox rows, attempts each with the
//! endpoint's timeout and records the outcome; the Standard Webhooks signature.
//!
//! Outcomes: 2xx delivered; 408, 429, 5xx and transport errors retried with jittered
//! exponential back-off (5 s doubling up to 1 h, `Retry-After` honoured up to 1 h) until 24 h
//! after the event; any other status failed; an address out of the endpoint's reach
//! (`address`) failed without sending. A worker per endpoint means a slow or dead endpoint
//! only delays its own rows.
//!
//! Claiming: `UPDATE … SET claimed_until = now + lease WHERE message_id IN (SELECT … due and
//! unclaimed … FOR UPDATE SKIP LOCKED) RETURNING …` (SQLite, one writer at a time, has no
//! `FOR UPDATE` and needs none). The lease also covers a replica dying mid-attempt: its rows
//! come due again once the lease passes, and are attempted with the same `webhook-id`.

use super::{store, AlertError, Shared};
use rand::Rng;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First retry delay; doubles per attempt up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(5);
/// Longest delay between two attempts (also the cap on `Retry-After`).
pub const MAX_DELAY: Duration = Duration::from_secs(3_600);
/// How long after its event a delivery is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3_600);
/// Rows one claim takes (attempted one after the other, in order).
const CLAIM_BATCH: i64 = 20;
/// How often the outbox gauges are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(10);
/// Longest error text kept per row.
const MAX_ERROR: usize = 300;

/// What an attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Try again (408, 429, 5xx, or no answer).
    Retry {
        /// The status, if an answer came.
        status: Option<u16>,
        /// Why, for `/webhooks/deliveries`.
        error: String,
        /// The endpoint's `Retry-After`, if it gave one in seconds.
        retry_after: Option<Duration>,
    },
    /// Give up (any other status).
    Failed {
        /// The status.
        status: u16,
    },
    /// Not sent: the endpoint's address is out of its reach (a private address, say). Not
    /// retried: it takes a configuration change.
    Refused(super::RefusedAddress),
}

impl DeliveryOutcome {
    /// The outcome of an answer with `status` and `Retry-After` header `retry_after`.
    pub fn of(status: u16, retry_after: Option<&str>) -> Self {
        match status {
            200..=299 => Self::Delivered { status },
            408 | 429 | 500..=599 => Self::Retry {
                status: Some(status),
                error: format!("the endpoint answered {status}"),
                retry_after: retry_after
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
            },
            _ => Self::Failed { status },
        }
    }
}

/// The Standard Webhooks signature: `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`
/// with the decoded secret.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    use base64::Engine as _;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(context.sign().as_ref())
    )
}

/// The delay before the attempt after `attempts` attempts: `FIRST_DELAY × 2^(attempts−1)` up
/// to [`MAX_DELAY`], a random point in its upper half (so that endpoints coming back are not
/// hit by every retry at once), at least `retry_after` (capped at [`MAX_DELAY`]).
pub fn delay(attempts: i64, retry_after: Option<Duration>) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let full = FIRST_DELAY
        .saturating_mul(2_u32.saturating_pow(exponent))
        .min(MAX_DELAY);
    let millis = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
    let jittered = Duration::from_millis(rand::rng().random_range(millis / 2..=millis));
    jittered.max(retry_after.unwrap_or_default().min(MAX_DELAY))
}

/// Spawns and stops the per-endpoint workers as the configuration changes, and refreshes the
/// outbox gauges. With `poll_period` `None` (tests) no worker runs: tests call `deliver_due`.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    poll_period: Option<Duration>,
    stop: CancellationToken,
) {
    let mut workers: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        if let Ok(store) = shared.history.store() {
            if let Err(error) = refresh_gauges(&shared, store.pool()).await {
                tracing::debug!(
                    "alerts: outbox gauges not refreshed: {}",
                    crate::telemetry::error_chain(&error)
                );
            }
            if let Some(poll) = poll_period {
                let config = shared.config.read().clone();
                workers.retain(|name, token| {
                    let keep = config.webhook(name).is_some();
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for webhook in &config.webhooks {
                    if !workers.contains_key(&webhook.name) {
                        let token = stop.child_token();
                        tokio::spawn(worker(
                            shared.clone(),
                            webhook.name.clone(),
                            poll,
                            token.clone(),
                        ));
                        workers.insert(webhook.name.clone(), token);
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll_period.unwrap_or(GAUGE_PERIOD).min(GAUGE_PERIOD)) => {}
        }
    }
}

/// One endpoint's worker: attempts due rows, then waits for a new event or the poll period.
async fn worker(shared: Arc<Shared>, name: String, poll: Duration, stop: CancellationToken) {
    // While the database is away every poll fails: told once, then summarised.
    let mut failures =
        crate::telemetry::RepeatedFailures::new(super::engine::FAILURE_SUMMARY_PERIOD);
    loop {
        // Registered before looking, so that an event written meanwhile still wakes it.
        let woken = shared.wake.notified();
        let result = deliver_due(&shared, &name).await;
        if result.is_ok() {
            if let Some(count) = failures.succeeded() {
                tracing::info!(webhook = %name, "alerts: deliveries work again after {count} failed poll(s)");
            }
        }
        match result {
            Ok(attempts) if attempts > 0 => continue,
            Ok(_) => {}
            Err(error) => {
                let error = crate::telemetry::error_chain(&error);
                match failures.failed(tokio::time::Instant::now()) {
                    crate::telemetry::FailureLine::First => tracing::warn!(
                        webhook = %name,
                        "alerts: deliveries not attempted, retried shortly (repeats are summarised): {error}"
                    ),
                    crate::telemetry::FailureLine::Summary { failures, seconds } => tracing::warn!(
                        webhook = %name,
                        "alerts: deliveries not attempted {failures} more time(s) in the last {seconds} s; the latest: {error}"
                    ),
                    crate::telemetry::FailureLine::Quiet => {}
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = woken => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Claims the endpoint's due rows and attempts each; returns the attempts made.
pub(super) async fn deliver_due(shared: &Shared, name: &str) -> Result<usize, AlertError> {
    let store = shared.history.store()?;
    let pool = store.pool();
    let Some(webhook) = shared.config.read().webhook(name).cloned() else {
        return Ok(0);
    };
    let now = (shared.clock)().unix_timestamp();
    let lease = i64::try_from(webhook.timeout.as_secs()).unwrap_or(i64::MAX) + 60;
    let lock = if store.is_postgres() {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET claimed_until = $1 WHERE message_id IN ( \
            SELECT message_id FROM webhook_deliveries WHERE webhook = $2 AND status = 'pending' \
            AND next_attempt <= $3 AND claimed_until <= $3 ORDER BY message_id LIMIT $4{lock}) \
         RETURNING message_id, event_id, attempts, created_at"
    );
    // Built from constants only; every value is bound.
    let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now.saturating_add(lease))
        .bind(name)
        .bind(now)
        .bind(CLAIM_BATCH)
        .fetch_all(pool)
        .await?;
    let mut rows = Vec::with_capacity(claimed.len());
    for row in &claimed {
        let id: String = row.try_get("message_id")?;
        let event: String = row.try_get("event_id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let created: i64 = row.try_get("created_at")?;
        rows.push((id, event, attempts, created));
    }
    // `RETURNING` order is unspecified: attempt oldest first.
    rows.sort();
    for (id, event, attempts, created) in &rows {
        let body: String = sqlx::query("SELECT body FROM alert_events WHERE id = $1")
            .bind(event.as_str())
            .fetch_one(pool)
            .await?
            .try_get("body")?;
        let attempted = (shared.clock)().unix_timestamp();
        let outcome = attempt(shared, &webhook, id, attempted, body).await;
        record(shared, pool, id, attempts + 1, *created, outcome).await?;
    }
    if !rows.is_empty() {
        refresh_gauges(shared, pool).await?;
    }
    Ok(rows.len())
}

/// One POST, signed, with the endpoint's timeout.
async fn attempt(
    shared: &Shared,
    webhook: &super::Webhook,
    id: &str,
    timestamp: i64,
    body: String,
) -> DeliveryOutcome {
    let reach = webhook.reach();
    // An address literal never reaches the resolver: checked here.
    if let Some(refused) = reach.refuses_literal(&webhook.url) {
        return DeliveryOutcome::Refused(refused);
    }
    let signature = sign(webhook.secret.bytes(), id, timestamp, body.as_bytes());
    let sent = shared
        .http
        .client(reach)
        .post(webhook.url.clone())
        .timeout(webhook.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            DeliveryOutcome::of(response.status().as_u16(), retry_after.as_deref())
        }
        Err(error) => match super::address::refusal(&error) {
            Some(refused) => DeliveryOutcome::Refused(refused),
            // Without the URL: a webhook URL often holds a token in its path.
            None => DeliveryOutcome::Retry {
                status: None,
                error: crate::telemetry::error_chain(&error.without_url()),
                retry_after: None,
            },
        },
    }
}

/// Writes an attempt's outcome and releases the claim.
async fn record(
    shared: &Shared,
    pool: &sqlx::AnyPool,
    id: &str,
    attempts: i64,
    created: i64,
    outcome: DeliveryOutcome,
) -> Result<(), AlertError> {
    let now = (shared.clock)().unix_timestamp();
    let give_up = created.saturating_add(i64::try_from(GIVE_UP_AFTER.as_secs()).unwrap_or(0));
    let (status, next, code, error, label) = match outcome {
        DeliveryOutcome::Delivered { status } => {
            ("delivered", now, Some(status), None, "delivered")
        }
        DeliveryOutcome::Failed { status } => (
            "failed",
            now,
            Some(status),
            Some(format!("the endpoint answered {status}: not retried")),
            "failed",
        ),
        DeliveryOutcome::Refused(refused) => (
            "failed",
            now,
            None,
            Some(format!("not sent: {refused}; not retried")),
            "failed",
        ),
        DeliveryOutcome::Retry {
            status,
            error,
            retry_after,
        } => {
            let wait = delay(attempts, retry_after);
            let next = now.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
            if next > give_up {
                (
                    "failed",
                    now,
                    status,
                    Some(format!("given up after 24 h of retries: {error}")),
                    "failed",
                )
            } else {
                ("pending", next, status, Some(error), "retried")
            }
        }
    };
    let error = error.map(|mut text| {
        if text.len() > MAX_ERROR {
            let mut end = MAX_ERROR;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    });
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt = $3, \
         claimed_until = 0, last_status = $4, last_error = $5, updated_at = $6 \
         WHERE message_id = $7",
    )
    .bind(status)
    .bind(attempts)
    .bind(next)
    .bind(code.map(i64::from))
    .bind(error.clone())
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    shared.metrics.delivery(label);
    if label == "failed" {
        tracing::warn!(
            webhook_id = id,
            "alerts: a webhook delivery failed: {}",
            error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Sets the outbox depth and the oldest pending row's age.
async fn refresh_gauges(shared: &Shared, pool: &sqlx::AnyPool) -> Result<(), AlertError> {
    let (depth, oldest) = store::outbox_depth(pool).await?;
    let now = (shared.clock)().unix_timestamp();
    shared.metrics.outbox_pending.set(depth);
    shared
        .metrics
        .outbox_oldest_age
        .set(oldest.map_or(0, |oldest| now.saturating_sub(oldest).max(0)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_delivered_retried_or_failed_as_the_specification_says() {
        assert_eq!(
            DeliveryOutcome::of(204, None),
            DeliveryOutcome::Delivered { status: 204 }
        );
        for status in [408, 429, 500, 503] {
            assert!(matches!(
                DeliveryOutcome::of(status, None),
                DeliveryOutcome::Retry { .. }
            ));
        }
        for status in [301, 400, 401, 404, 410] {
            assert_eq!(
                DeliveryOutcome::of(status, None),
                DeliveryOutcome::Failed { status }
            );
        }
        assert!(matches!(
            DeliveryOutcome::of(429, Some("120")),
            DeliveryOutcome::Retry { retry_after: Some(wait), .. } if wait == Duration::from_secs(120)
        ));
    }

    #[test]
    fn delays_double_within_jitter_and_honour_retry_after_up_to_the_cap() {
        for attempts in 1..=30 {
            let full = FIRST_DELAY
                .saturating_mul(2_u32.saturating_pow(u32::try_from(attempts - 1).unwrap().min(20)))
                .min(MAX_DELAY);
            let wait = delay(attempts, None);
            assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait:?}");
        }
        assert_eq!(
            delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
        assert_eq!(delay(1, Some(Duration::from_secs(86_400))), MAX_DELAY);
    }

    #[test]
    fn the_signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification (and its reference libraries).
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
