//! What Microsoft Defender for Endpoint's answers share: its error body (`{error: {code,
//! message, target}}`, `target` the correlation id) and the `{time, score}` body of its score
//! endpoints (`device` and `exposure` read the same shape).

use super::{clipped, Dialect, ErrorFacts};
use crate::upstream::{CallFailure, Reading};
use crate::wire::{ConfigurationScore, DefenderErrorBody};
use std::time::SystemTime;

/// Defender's answers: 200 only; errors in its own body.
pub(super) const DIALECT: Dialect = Dialect {
    partial_content: false,
    error: error_facts,
};

/// The facts of a Defender error body.
fn error_facts(body: &[u8]) -> Option<ErrorFacts> {
    let error = serde_json::from_slice::<DefenderErrorBody>(body)
        .ok()?
        .error;
    Some(ErrorFacts {
        code: error.code,
        message: clipped(&error.message),
        correlation_id: error.target,
        date: None,
    })
}

/// A Defender `{time, score}` body as a reading (`configurationScore`, `exposureScore`).
pub(super) fn read_time_and_score(body: &[u8]) -> Result<Reading, CallFailure> {
    match serde_json::from_slice::<ConfigurationScore>(body) {
        Ok(answer) if answer.score.is_finite() => Ok(Reading {
            score: answer.score,
            time: answer.time,
            fetched_at: SystemTime::now(),
            secure: None,
        }),
        Ok(_) => Err(CallFailure::Unusable {
            detail: "Defender answered a score that is not a finite number".to_owned(),
        }),
        Err(error) => Err(CallFailure::Unusable {
            detail: format!("Defender answered an unusable body: {error}"),
        }),
    }
}
