//! Controls across tenants, as `GET /controls` shows them: one row per control with how many
//! tenants have it done, partial, to do, ignored or resolved by a third party, the points all of
//! them could still gain, and the tenants still to do — "which control do we roll out next".

use super::control::TenantControl;
use super::kinds::{Category, State, Status};
use super::listing::{by_points_descending, by_rank, ControlFilter, ControlSort};
use super::profile::Profile;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

/// Most tenant ids a row lists in `todo_tenants` (`todo_tenants_count` has them all).
pub const TODO_TENANTS_SHOWN: usize = 20;

/// One control across tenants.
///
/// The five counts partition the tenants that have the control: a tenant that ignored it or
/// resolved it through a third party is counted there only, whatever its score; the others by
/// status (`reviewed` ones too).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSummary<T> {
    /// The control's profile (that of the first tenant, in the order given, with one).
    pub profile: Arc<Profile>,
    /// Its category.
    pub category: Option<Category>,
    /// Tenants with every point.
    pub done: u32,
    /// Tenants with some points.
    pub partial: u32,
    /// Tenants with none.
    pub todo: u32,
    /// Tenants that accepted the risk.
    pub ignored: u32,
    /// Tenants that resolved it through a third party.
    pub third_party: u32,
    /// Tenants that reviewed it (counted in done, partial or todo as well).
    pub reviewed: u32,
    /// Points all tenants could still gain (two decimals).
    pub points_to_gain: f64,
    /// The tenants still to do (partial or todo, neither ignored nor third party), most points
    /// to gain first, then by id; at most [`TODO_TENANTS_SHOWN`].
    pub todo_tenants: Vec<T>,
    /// How many tenants are still to do.
    pub todo_tenants_count: u32,
}

impl<T> ControlSummary<T> {
    /// The control's id.
    pub fn id(&self) -> &str {
        &self.profile.id
    }

    /// Tenants with the control in `status` (ignored and third-party ones excluded).
    pub fn with_status(&self, status: Status) -> u32 {
        match status {
            Status::Done => self.done,
            Status::Partial => self.partial,
            Status::Todo => self.todo,
        }
    }

    /// Tenants with the control in `state`.
    pub fn with_state(&self, state: State) -> u32 {
        match state {
            State::Ignored => self.ignored,
            State::ThirdParty => self.third_party,
            State::Reviewed => self.reviewed,
            State::Default => (self.done + self.partial + self.todo).saturating_sub(self.reviewed),
        }
    }
}

/// A row being built: the summary and the points of the tenants shown so far.
struct Row<T> {
    summary: ControlSummary<T>,
    /// Points to gain of each tenant in `summary.todo_tenants`, same order.
    shown_points: Vec<f64>,
    /// Unrounded sum.
    points: f64,
}

/// Every control of `tenants` (each tenant's id and controls; give them in a stable order, such
/// as by id) that passes `filter`, summed up, in `sort` order (ties by id). Category and service
/// filters apply to the control; status and state filters keep the controls that at least one
/// tenant has in that status or state.
pub fn summarize<'a, T, I>(
    tenants: I,
    filter: &ControlFilter,
    sort: ControlSort,
) -> Vec<ControlSummary<T>>
where
    T: Clone + Ord + 'a,
    I: IntoIterator<Item = (&'a T, &'a [TenantControl])>,
{
    let mut rows: HashMap<Arc<str>, Row<T>> = HashMap::new();
    for (tenant, controls) in tenants {
        for control in controls.iter().filter(|c| filter.matches_control(c)) {
            let row = rows.entry(Arc::from(control.id())).or_insert_with(|| Row {
                summary: ControlSummary {
                    profile: control.profile().clone(),
                    category: control.category(),
                    done: 0,
                    partial: 0,
                    todo: 0,
                    ignored: 0,
                    third_party: 0,
                    reviewed: 0,
                    points_to_gain: 0.0,
                    todo_tenants: Vec::new(),
                    todo_tenants_count: 0,
                },
                shown_points: Vec::new(),
                points: 0.0,
            });
            add(row, tenant, control);
        }
    }
    let mut summaries: Vec<ControlSummary<T>> = rows
        .into_values()
        .map(|row| {
            let mut summary = row.summary;
            summary.points_to_gain = (row.points * 100.0).round() / 100.0;
            summary
        })
        .filter(|summary| {
            filter
                .status
                .is_none_or(|status| summary.with_status(status) > 0)
                && filter
                    .state
                    .is_none_or(|state| summary.with_state(state) > 0)
        })
        .collect();
    summaries.sort_by(|a, b| {
        let first = match sort {
            ControlSort::PointsToGain => by_points_descending(a.points_to_gain, b.points_to_gain),
            ControlSort::Rank => by_rank(a.profile.rank, b.profile.rank),
            ControlSort::Id => Ordering::Equal,
        };
        first.then_with(|| a.id().cmp(b.id()))
    });
    summaries
}

fn add<T: Clone + Ord>(row: &mut Row<T>, tenant: &T, control: &TenantControl) {
    let summary = &mut row.summary;
    if summary.profile.is_bare() && !control.profile().is_bare() {
        summary.profile = control.profile().clone();
    }
    if summary.category.is_none() {
        summary.category = control.category();
    }
    let state = control.state();
    if state == State::Reviewed {
        summary.reviewed += 1;
    }
    match state {
        State::Ignored => summary.ignored += 1,
        State::ThirdParty => summary.third_party += 1,
        State::Default | State::Reviewed => match control.status() {
            Status::Done => summary.done += 1,
            Status::Partial => summary.partial += 1,
            Status::Todo => summary.todo += 1,
        },
    }
    let points = control.points_to_gain();
    row.points += points;
    if state.is_settled() || control.status() == Status::Done {
        return;
    }
    summary.todo_tenants_count += 1;
    // Keep the best TODO_TENANTS_SHOWN: most points first, then by tenant.
    let better = |(p, t): (f64, &T), (q, u): (f64, &T)| {
        by_points_descending(p, q).then_with(|| t.cmp(u)) == Ordering::Less
    };
    let at = row
        .shown_points
        .iter()
        .zip(&summary.todo_tenants)
        .position(|(p, t)| better((points, tenant), (*p, t)))
        .unwrap_or(summary.todo_tenants.len());
    if at < TODO_TENANTS_SHOWN {
        summary.todo_tenants.insert(at, tenant.clone());
        row.shown_points.insert(at, points);
        summary.todo_tenants.truncate(TODO_TENANTS_SHOWN);
        row.shown_points.truncate(TODO_TENANTS_SHOWN);
    }
}
