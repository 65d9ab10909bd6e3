//! One tenant's controls as `GET /tenants/{id}/controls` lists them: filters and sorts.

use super::control::TenantControl;
use super::kinds::{Category, State, Status};
use std::cmp::Ordering;

/// Which controls a list keeps (every filter given must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFilter {
    /// Only this category.
    pub category: Option<Category>,
    /// Only this status (per tenant); across tenants: controls some tenant has in it.
    pub status: Option<Status>,
    /// Only this state (per tenant); across tenants: controls some tenant has in it.
    pub state: Option<State>,
    /// Only this service (`MDO`, `AzureAD`, …; any ASCII case).
    pub service: Option<String>,
}

impl ControlFilter {
    /// Whether `control` passes the category and service filters (those of the control itself).
    pub(crate) fn matches_control(&self, control: &TenantControl) -> bool {
        self.category
            .is_none_or(|category| control.category() == Some(category))
            && self.service.as_deref().is_none_or(|service| {
                control
                    .profile()
                    .service
                    .as_deref()
                    .is_some_and(|own| own.eq_ignore_ascii_case(service.trim()))
            })
    }

    /// Whether one tenant's `control` passes every filter.
    pub fn matches(&self, control: &TenantControl) -> bool {
        self.matches_control(control)
            && self.status.is_none_or(|status| control.status() == status)
            && self.state.is_none_or(|state| control.state() == state)
    }
}

/// The order of a list of controls: `rank` (Microsoft's, most important first), `-points_to_gain`
/// (most points to gain first) or `id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub enum ControlSort {
    /// Microsoft's rank, most important first (unranked last); the default per tenant.
    #[default]
    #[serde(rename = "rank")]
    Rank,
    /// Most points to gain first; the default across tenants.
    #[serde(rename = "-points_to_gain")]
    PointsToGain,
    /// By id.
    #[serde(rename = "id")]
    Id,
}

impl ControlSort {
    /// Every sort.
    pub const ALL: [ControlSort; 3] = [
        ControlSort::Rank,
        ControlSort::PointsToGain,
        ControlSort::Id,
    ];

    /// The API's spelling (`sort=rank|-points_to_gain|id`).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlSort::Rank => "rank",
            ControlSort::PointsToGain => "-points_to_gain",
            ControlSort::Id => "id",
        }
    }

    /// The sort spelled `text` exactly as [`ControlSort::as_str`] writes it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sort| sort.as_str() == text)
    }
}

/// Unranked last.
pub(crate) fn by_rank(a: Option<u32>, b: Option<u32>) -> Ordering {
    a.unwrap_or(u32::MAX).cmp(&b.unwrap_or(u32::MAX))
}

/// Larger first (points are finite, two decimals).
pub(crate) fn by_points_descending(a: f64, b: f64) -> Ordering {
    b.total_cmp(&a)
}

/// `controls` that pass `filter`, in `sort` order; ties are broken by rank, then by id, so
/// that every order is total and stable from one call to the next.
pub fn list<'a>(
    controls: &'a [TenantControl],
    filter: &ControlFilter,
    sort: ControlSort,
) -> Vec<&'a TenantControl> {
    let mut kept: Vec<&TenantControl> = controls.iter().filter(|c| filter.matches(c)).collect();
    kept.sort_by(|a, b| {
        let rank = || by_rank(a.profile().rank, b.profile().rank);
        let first = match sort {
            ControlSort::Rank => rank(),
            ControlSort::PointsToGain => {
                by_points_descending(a.points_to_gain(), b.points_to_gain()).then_with(rank)
            }
            ControlSort::Id => Ordering::Equal,
        };
        first.then_with(|| a.id().cmp(b.id()))
    });
    kept
}
