//! `control_regressed`: per (alert, tenant), which of the watched controls were done at the
//! last evaluation and which regressed since, kept in `alert_control_states`.
//!
//! A control regresses when it was done at the previous evaluation and is not now; it stays
//! regressed until it is seen done again. The (alert, tenant) fires while any control is
//! regressed (`value`: how many) and resolves when none is. A control missing from a reading
//! decides nothing: it keeps what was known of it. A changed rule starts over.

use super::engine::{apply, covering, Verdict};
use super::{AlertError, Condition, Shared};
use crate::history::{ControlPoint, Store};
use crate::model::Metric;
use sqlx::{AnyPool, Row};
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// What is kept of one (alert, tenant) between evaluations.
#[derive(Debug, Default, PartialEq)]
struct Memory {
    /// Watched controls done at the last evaluation (or before, when missing since).
    done: BTreeSet<String>,
    /// Controls that were done and are not, since.
    regressed: BTreeSet<String>,
}

/// What one evaluation changed: the new memory, and the control to name in an event.
#[derive(Debug, PartialEq)]
struct Outcome {
    memory: Memory,
    /// A control that regressed now (else any still regressed).
    regressed_now: Option<String>,
    /// A control done again now.
    done_again: Option<String>,
}

/// Evaluates `points`, the controls of `tenant` read `at`, against `memory`.
fn evaluate(mut memory: Memory, points: &[&ControlPoint]) -> Outcome {
    let mut regressed_now = None;
    let mut done_again = None;
    for point in points {
        if point.is_done() {
            if memory.regressed.remove(&point.control) {
                done_again = Some(point.control.clone());
            }
            memory.done.insert(point.control.clone());
        } else if memory.done.remove(&point.control)
            && memory.regressed.insert(point.control.clone())
        {
            regressed_now.get_or_insert_with(|| point.control.clone());
        }
    }
    let regressed_now = regressed_now.or_else(|| memory.regressed.iter().next().cloned());
    Outcome {
        memory,
        regressed_now,
        done_again,
    }
}

/// The controls of `tenant` read `at`: every `control_regressed` rule covering the tenant is
/// evaluated, and a transition written as any other (state, event naming the control, outbox).
pub(super) async fn on_controls(
    shared: &Shared,
    store: &Store,
    tenant: &str,
    at: OffsetDateTime,
    points: &[ControlPoint],
) -> Result<(), AlertError> {
    let pool = store.pool();
    let config = shared.config.read().clone();
    for rule in covering(&config, tenant, Metric::Secure) {
        let Condition::ControlRegressed {
            controls,
            categories,
        } = &rule.condition
        else {
            continue;
        };
        let watched: Vec<&ControlPoint> = points
            .iter()
            .filter(|point| controls.is_empty() || controls.contains(&point.control))
            .filter(|point| {
                categories.is_empty()
                    || point
                        .category
                        .is_some_and(|category| categories.contains(&category))
            })
            .collect();
        let fingerprint = rule.fingerprint();
        let memory = load(pool, &rule.name, tenant, &fingerprint).await?;
        let outcome = evaluate(memory, &watched);
        save(pool, &rule.name, tenant, &fingerprint, &outcome.memory).await?;
        let firing = !outcome.memory.regressed.is_empty();
        let verdict = Verdict {
            firing,
            value: outcome.memory.regressed.len() as f64,
            threshold: f64::NAN,
        };
        let control = if firing {
            outcome.regressed_now
        } else {
            outcome.done_again
        };
        apply(
            shared,
            pool,
            &config,
            rule,
            tenant,
            verdict,
            control.as_deref(),
            at,
        )
        .await?;
    }
    Ok(())
}

/// Forgets the memories of rules that are gone or changed, and of tenants a rule no longer
/// covers (after a reload).
pub(super) async fn forget_stale(
    pool: &AnyPool,
    config: &super::AlertsConfig,
) -> Result<(), AlertError> {
    let rows = sqlx::query("SELECT alert, tenant, rule FROM alert_control_states")
        .fetch_all(pool)
        .await?;
    for row in rows {
        let (alert, tenant, fingerprint): (String, String, String) = (
            row.try_get("alert")?,
            row.try_get("tenant")?,
            row.try_get("rule")?,
        );
        let kept = config.rules.iter().any(|rule| {
            rule.name == alert
                && rule.fingerprint() == fingerprint
                && rule.tenants.contains(&tenant)
        });
        if !kept {
            sqlx::query("DELETE FROM alert_control_states WHERE alert = $1 AND tenant = $2")
                .bind(alert.as_str())
                .bind(tenant.as_str())
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// The memory of (alert, tenant) under rule `fingerprint`; empty when none or another rule's.
async fn load(
    pool: &AnyPool,
    alert: &str,
    tenant: &str,
    fingerprint: &str,
) -> Result<Memory, AlertError> {
    let row = sqlx::query(
        "SELECT rule, done, regressed FROM alert_control_states WHERE alert = $1 AND tenant = $2",
    )
    .bind(alert)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Memory::default());
    };
    if row.try_get::<String, _>("rule")? != fingerprint {
        return Ok(Memory::default());
    }
    let list = |column: &str| -> Result<BTreeSet<String>, AlertError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|_| AlertError::Corrupt(format!("alert_control_states.{column}")))
    };
    Ok(Memory {
        done: list("done")?,
        regressed: list("regressed")?,
    })
}

async fn save(
    pool: &AnyPool,
    alert: &str,
    tenant: &str,
    fingerprint: &str,
    memory: &Memory,
) -> Result<(), AlertError> {
    sqlx::query(
        "INSERT INTO alert_control_states (alert, tenant, rule, done, regressed) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (alert, tenant) DO UPDATE SET \
         rule = excluded.rule, done = excluded.done, regressed = excluded.regressed",
    )
    .bind(alert)
    .bind(tenant)
    .bind(fingerprint)
    .bind(serde_json::json!(memory.done).to_string())
    .bind(serde_json::json!(memory.regressed).to_string())
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::State;

    fn point(control: &str, score: f64) -> ControlPoint {
        ControlPoint {
            control: control.into(),
            score,
            max_score: Some(10.0),
            state: State::Default,
            category: None,
        }
    }

    #[test]
    fn a_control_done_then_not_regresses_until_done_again() {
        let first = evaluate(Memory::default(), &[&point("a", 10.0), &point("b", 5.0)]);
        assert!(first.memory.regressed.is_empty());
        assert_eq!(first.regressed_now, None);
        let second = evaluate(first.memory, &[&point("a", 4.0), &point("b", 5.0)]);
        assert_eq!(second.memory.regressed, BTreeSet::from(["a".to_owned()]));
        assert_eq!(second.regressed_now.as_deref(), Some("a"));
        // Still not done: still regressed; missing from a reading: decides nothing.
        let third = evaluate(second.memory, &[&point("b", 10.0)]);
        assert_eq!(third.memory.regressed, BTreeSet::from(["a".to_owned()]));
        let fourth = evaluate(third.memory, &[&point("a", 10.0)]);
        assert!(fourth.memory.regressed.is_empty());
        assert_eq!(fourth.done_again.as_deref(), Some("a"));
    }

    #[test]
    fn a_control_never_done_does_not_regress() {
        let first = evaluate(Memory::default(), &[&point("a", 0.0)]);
        let second = evaluate(first.memory, &[&point("a", 3.0)]);
        assert!(second.memory.regressed.is_empty());
    }
}
