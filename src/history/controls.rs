//! Per-control history: what is recorded of a tenant's control ([`ControlPoint`]), what is
//! served ([`ControlChange`]), and how a control id is checked before it reaches a query.
//!
//! The store keeps a row only when a control's score, maximum or state changes for a tenant
//! (`Store::write_controls`, `Store::insert_control_days`), so a year of a tenant's 70
//! controls is a few thousand rows, not 70 a day.

use crate::controls::{Category, State, TenantControl};
use time::OffsetDateTime;

/// Longest control id accepted (Graph's ids are below 100 characters).
pub const MAX_CONTROL_ID: usize = 200;

/// One control of one tenant at one reading: what its history keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlPoint {
    /// The control's id (Graph's `controlName`).
    pub control: String,
    /// Points achieved.
    pub score: f64,
    /// The most points possible (from the profile); `None` without one.
    pub max_score: Option<f64>,
    /// The tenant's state of the control.
    pub state: State,
    /// The control's category, if known: what `control_regressed`'s `categories` filter on
    /// (not stored in the history).
    pub category: Option<Category>,
}

impl ControlPoint {
    /// Whether every point is achieved (`score` ≥ `max_score`, to the two decimals scores
    /// have). A control without a maximum is never known to be done.
    pub fn is_done(&self) -> bool {
        match self.max_score {
            Some(max) if max <= 0.0 => true,
            Some(max) => self.score + 0.005 >= max,
            None => false,
        }
    }

    /// Whether it holds numbers the database can store (finite score and maximum) and a
    /// control id [`valid_control_id`] accepts.
    pub(super) fn is_storable(&self) -> bool {
        self.score.is_finite()
            && self.max_score.is_none_or(f64::is_finite)
            && valid_control_id(&self.control)
    }
}

impl From<&TenantControl> for ControlPoint {
    fn from(control: &TenantControl) -> Self {
        Self {
            control: control.id().to_owned(),
            score: control.score(),
            max_score: control.max_score(),
            state: control.state(),
            category: control.category(),
        }
    }
}

/// One change of a control in a tenant: its values from `at` until the next change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ControlChange {
    /// When the values were first read (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, example = "2026-11-28T09:00:00Z")]
    pub at: OffsetDateTime,
    /// Points achieved.
    pub score: f64,
    /// The most points possible; absent when unknown.
    pub max_score: Option<f64>,
    /// The tenant's state of the control.
    pub state: State,
}

/// Whether `id` may be a control id: 1 to [`MAX_CONTROL_ID`] characters of letters, digits
/// and `_ - . :` (Graph's ids are such as `MFARegistrationV2`, `scid_2010`).
pub fn valid_control_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONTROL_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(score: f64, max_score: Option<f64>) -> ControlPoint {
        ControlPoint {
            control: "MFARegistrationV2".into(),
            score,
            max_score,
            state: State::Default,
            category: None,
        }
    }

    #[test]
    fn a_control_is_done_when_its_score_reaches_its_maximum() {
        assert!(point(10.0, Some(10.0)).is_done());
        assert!(point(9.999, Some(10.0)).is_done());
        assert!(!point(9.0, Some(10.0)).is_done());
        assert!(point(0.0, Some(0.0)).is_done());
        assert!(!point(10.0, None).is_done());
    }

    #[test]
    fn control_ids_are_bounded_and_plain() {
        assert!(valid_control_id("MFARegistrationV2"));
        assert!(valid_control_id("scid_2010"));
        assert!(!valid_control_id(""));
        assert!(!valid_control_id("a b"));
        assert!(!valid_control_id("../x"));
        assert!(!valid_control_id(&"a".repeat(MAX_CONTROL_ID + 1)));
        assert!(!point(f64::NAN, Some(1.0)).is_storable());
    }
}
