//! The `summary` of a `/scores` answer: counts by status and statistics over every matching
//! tenant, rounded so that float noise does not reach callers.

use super::{Item, ItemStatus};
use serde::Serialize;
use utoipa::ToSchema;

/// Counts and statistics over every matching tenant; statistics use `ok` and `stale` items and
/// are `null` when there are none.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
// The schema keeps the name it was first published under.
#[schema(as = SummaryView)]
pub struct Summary {
    /// Matching tenants.
    pub tenants: usize,
    /// Tenants with a fresh score.
    pub ok: usize,
    /// Tenants with a stale score.
    pub stale: usize,
    /// Tenants without a score.
    pub failed: usize,
    /// Lowest score.
    pub min: Option<f64>,
    /// Highest score.
    pub max: Option<f64>,
    /// Mean score.
    pub mean: Option<f64>,
    /// Median score (the mean of the two middle scores for an even count).
    pub median: Option<f64>,
}

impl Summary {
    /// Summarises items.
    pub fn of(items: &[Item]) -> Self {
        let count = |status| items.iter().filter(|item| item.status() == status).count();
        let scores: Vec<f64> = items.iter().filter_map(Item::score).collect();
        let Statistics {
            min,
            max,
            mean,
            median,
        } = Statistics::of(scores);
        Self {
            tenants: items.len(),
            ok: count(ItemStatus::Ok),
            stale: count(ItemStatus::Stale),
            failed: count(ItemStatus::Error),
            min,
            max,
            mean,
            median,
        }
    }
}

/// Min, max, mean and median of some scores; `None` each when there are none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Statistics {
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
    pub(super) mean: Option<f64>,
    pub(super) median: Option<f64>,
}

impl Statistics {
    pub(super) fn of(mut scores: Vec<f64>) -> Self {
        scores.sort_by(f64::total_cmp);
        let n = scores.len();
        let median = match n {
            0 => None,
            _ if n % 2 == 1 => Some(scores[n / 2]),
            _ => Some(round_derived((scores[n / 2 - 1] + scores[n / 2]) / 2.0)),
        };
        Self {
            min: scores.first().copied(),
            max: scores.last().copied(),
            mean: (n > 0).then(|| round_derived(scores.iter().sum::<f64>() / n as f64)),
            median,
        }
    }
}

/// Rounds a computed statistic to 6 decimal places, so that float noise (`545.4348000000001`)
/// does not reach callers; scores themselves are passed on exactly as Defender sent them.
pub(super) fn round_derived(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}
