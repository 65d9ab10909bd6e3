//! The classifier: what an attempt's outcome means (done, retry, renew the token, fail, cool
//! down), as a pure function of the facts, and the outcome label each call is counted under.
//! It touches no state: [`super::Outbound`] applies the decisions.

use crate::metrics::CallOutcome;
use crate::token::TokenError;
use crate::upstream::{CallFailure, Reading, UpstreamError, UpstreamService};
use std::time::Duration;

/// Cool-down after a 429 without a usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why one attempt produced no reading: the facts [`classify`] decides on.
#[derive(Debug)]
pub enum Failure {
    /// No token for the source's scope.
    Token(TokenError),
    /// The call itself failed.
    Call(CallFailure),
    /// The call did not answer within its attempt timeout.
    AttemptTimeout {
        /// Whether the attempt's timeout was the fetch's own deadline (nothing is left to retry).
        deadline_reached: bool,
    },
}

/// What to do after an attempt (of a score fetch, or of another call such as a back-fill's,
/// whose answer is `T`).
#[derive(Debug, Clone)]
pub enum Decision<T = Reading> {
    /// An answer: the fetch succeeded.
    Done(T),
    /// Transient (5xx, transport, attempt timeout, Entra unavailable): worth another attempt.
    Retry(String),
    /// The source answered 401 with a token that may have been revoked or expired early: renew
    /// it and try once more.
    RenewToken(String),
    /// Final: retrying does not help.
    Fail(UpstreamError),
    /// The source asked to be left alone (429) for this long: put the tenant in cool-down.
    CoolDown(Duration),
}

/// Classifies one attempt's outcome of a call to `service`. Pure: the caller applies the
/// decision.
///
/// `renewed` says whether the token was already renewed during this fetch (a second 401 is final).
pub fn classify<T>(
    outcome: Result<T, Failure>,
    renewed: bool,
    service: UpstreamService,
) -> Decision<T> {
    let failure = match outcome {
        Ok(reading) => return Decision::Done(reading),
        Err(failure) => failure,
    };
    match failure {
        Failure::Token(TokenError::Rejected { detail, .. } | TokenError::Invalid { detail }) => {
            Decision::Fail(UpstreamError::Credentials { detail })
        }
        Failure::Token(TokenError::Unavailable { detail }) => {
            Decision::Retry(format!("Entra ID unavailable: {detail}"))
        }
        Failure::AttemptTimeout {
            deadline_reached: true,
        } => Decision::Fail(UpstreamError::Timeout { service }),
        Failure::AttemptTimeout {
            deadline_reached: false,
        } => Decision::Retry(format!("{} did not answer in time", service.display_name())),
        Failure::Call(CallFailure::Transport { detail }) => Decision::Retry(detail),
        Failure::Call(CallFailure::Unusable { detail }) => {
            Decision::Fail(UpstreamError::Failed { service, detail })
        }
        Failure::Call(CallFailure::Status {
            status,
            retry_after,
            detail,
        }) => match status {
            401 if !renewed => Decision::RenewToken(detail),
            401 | 403 => Decision::Fail(UpstreamError::Denied { status, detail }),
            // Retired, or not offered in this cloud: retrying does not bring it back.
            404 | 410 => Decision::Fail(UpstreamError::Gone { detail }),
            429 => Decision::CoolDown(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
            500..=599 => Decision::Retry(detail),
            _ => Decision::Fail(UpstreamError::Failed { service, detail }),
        },
    }
}

/// The `outcome` label of `scoregate_upstream_calls_total`.
pub(super) fn call_outcome<T>(outcome: &Result<T, Failure>) -> CallOutcome {
    match outcome {
        Ok(_) => CallOutcome::Ok,
        Err(Failure::AttemptTimeout { .. }) => CallOutcome::Timeout,
        Err(Failure::Call(CallFailure::Transport { .. })) => CallOutcome::Transport,
        Err(Failure::Call(CallFailure::Unusable { .. })) => CallOutcome::Malformed,
        Err(Failure::Call(CallFailure::Status { status, .. })) => CallOutcome::from_status(*status),
        // Never passed here: a token failure returns before the call, and
        // `scoregate_token_requests_total` counts it.
        Err(Failure::Token(_)) => CallOutcome::Transport,
    }
}
