//! One control in one tenant: a snapshot's `controlScores` entry joined with the tenant's
//! profile of it (`controlName` = profile `id`), kept small — the shared profile by `Arc`, the
//! tenant's own values inline, its status text as shared words plus its own numbers — because
//! a gateway holds 70 of them for each of thousands of tenants.

use super::graph::{parse_time, ControlScoreEntry};
use super::interner::Interner;
use super::kinds::{Category, State, Status};
use super::profile::{Profile, TenantProfiles};
use super::text::{fill, has_number_marks, TEMPLATE_NUMBERS};
use std::borrow::Cow;
use std::sync::Arc;

/// Stand-in for "no time" in [`TenantControl`]'s packed `last_synced` (Unix seconds in a
/// `u32`: 1970 to 2106).
const NO_TIME: u32 = u32::MAX;

/// Stand-in for "not sent" in [`TenantControl`]'s packed `reported_percentage`.
const NO_PERCENTAGE: u16 = u16::MAX;

/// Stand-in for "not sent" in [`TenantControl`]'s packed `count` and `total`.
const NO_COUNT: u32 = u32::MAX;

/// One control of one tenant, packed into 48 bytes: 700,000 of them (10,000 tenants) take
/// 34 MB; what tenants share is behind the `Arc`s (thin ones: 8 bytes each).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantControl {
    /// The shared profile (a bare stand-in when Graph sent none).
    profile: Arc<Profile>,
    /// The words of the plain `implementationStatus` (numbers taken out), shared.
    status_words: Option<Arc<String>>,
    /// Unix seconds of `lastSynced`, or [`NO_TIME`].
    last_synced: u32,
    /// Points achieved (two decimals, exact enough in an `f32`; 0 when Graph sent none).
    score: f32,
    /// `count`, or [`NO_COUNT`].
    count: u32,
    /// `total`, or [`NO_COUNT`].
    total: u32,
    /// Graph's `scoreInPercentage`, or NaN: used when the profile gives no maximum.
    reported_percentage: u16,
    /// The numbers of the `implementationStatus`, in order.
    status_numbers: [u32; TEMPLATE_NUMBERS],
    /// The entry's category (else the profile's).
    category: Option<Category>,
    /// The tenant's state of the control.
    state: State,
}

/// An informational count, if it reads as one below [`NO_COUNT`].
fn whole(value: Option<f64>) -> u32 {
    value
        .filter(|v| *v >= 0.0 && *v < f64::from(NO_COUNT))
        .map_or(NO_COUNT, |v| v.round() as u32)
}

/// A percentage in hundredths, if it is one (0 to 655.34; Graph's are 0 to 100).
pub(super) fn hundredths(percentage: f64) -> Option<u16> {
    let scaled = (percentage * 100.0).round();
    (scaled >= 0.0 && scaled < f64::from(NO_PERCENTAGE)).then_some(scaled as u16)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

impl TenantControl {
    /// Graph's `scoreInPercentage`, two decimals, if sent.
    fn reported_percentage(&self) -> Option<f64> {
        (self.reported_percentage != NO_PERCENTAGE)
            .then(|| f64::from(self.reported_percentage) / 100.0)
    }

    /// The tenant's controls: every entry of a snapshot's `controlScores` that names a control
    /// (the first of a repeated name), joined with `profiles`. A control Graph sent no profile
    /// for keeps its id and category, without title nor maximum.
    pub fn join(
        interner: &Interner,
        entries: &[ControlScoreEntry],
        profiles: &TenantProfiles,
    ) -> Box<[TenantControl]> {
        let mut seen = std::collections::HashSet::new();
        entries
            .iter()
            .filter_map(|entry| {
                let id = entry.control_name.as_deref()?.trim();
                if id.is_empty() || !seen.insert(id) {
                    return None;
                }
                let category = entry
                    .control_category
                    .as_deref()
                    .and_then(Category::from_graph);
                let (profile, state) = match profiles.get(id) {
                    Some((profile, state)) => (profile.clone(), state),
                    None => (interner.bare_profile(id, category), State::Default),
                };
                let (status_words, template) = entry
                    .implementation_status
                    .as_deref()
                    .and_then(|html| interner.status_text(html))
                    .map_or((None, None), |(words, template)| {
                        (Some(words), Some(template))
                    });
                Some(TenantControl {
                    category: category.or(profile.category),
                    profile,
                    status_words,
                    last_synced: parse_time(entry.last_synced.as_deref())
                        .and_then(|seconds| u32::try_from(seconds).ok())
                        .filter(|seconds| *seconds != NO_TIME)
                        .unwrap_or(NO_TIME),
                    score: entry
                        .score
                        .filter(|score| (0.0..=1_000_000.0).contains(score))
                        .map_or(0.0, |score| round2(score) as f32),
                    count: whole(entry.count),
                    total: whole(entry.total),
                    reported_percentage: entry
                        .score_in_percentage
                        .and_then(hundredths)
                        .unwrap_or(NO_PERCENTAGE),
                    status_numbers: template
                        .as_ref()
                        .map_or([0; TEMPLATE_NUMBERS], |t| t.numbers),
                    state,
                })
            })
            .collect()
    }

    /// The same control with its profile and state from `profiles` (fetched again since it
    /// was joined); its own values (score, counts, status text) kept. A control `profiles`
    /// lacks gets a bare profile, as [`TenantControl::join`] gives it.
    pub fn with_profiles(&self, interner: &Interner, profiles: &TenantProfiles) -> TenantControl {
        let (profile, state) = match profiles.get(self.id()) {
            Some((profile, state)) => (profile.clone(), state),
            None if self.profile.is_bare() => (self.profile.clone(), State::Default),
            None => (
                interner.bare_profile(self.id(), self.category),
                State::Default,
            ),
        };
        TenantControl {
            category: self.category.or(profile.category),
            profile,
            state,
            ..self.clone()
        }
    }

    /// The shared profile.
    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    /// The control's id.
    pub fn id(&self) -> &str {
        &self.profile.id
    }

    /// Its category, if Graph named a known one.
    pub fn category(&self) -> Option<Category> {
        self.category
    }

    /// Points achieved (two decimals).
    pub fn score(&self) -> f64 {
        round2(f64::from(self.score))
    }

    /// The maximum points (from the profile; none without one).
    pub fn max_score(&self) -> Option<f64> {
        self.profile.max_score
    }

    /// Points achieved as a percentage of the maximum (two decimals); Graph's own
    /// `scoreInPercentage` when the maximum is unknown.
    pub fn percentage(&self) -> Option<f64> {
        match self.max_score() {
            Some(max) if max > 0.0 => Some(round2((self.score() / max * 100.0).min(100.0))),
            Some(_) => Some(100.0),
            None => self.reported_percentage(),
        }
    }

    /// `done` when every point is achieved, `todo` when none is, `partial` between. Without a
    /// maximum, Graph's percentage decides whether a scoring control is done.
    pub fn status(&self) -> Status {
        let score = self.score();
        if score <= 0.0 {
            return match self.max_score() {
                Some(max) if max <= 0.0 => Status::Done,
                _ => Status::Todo,
            };
        }
        let done = match self.max_score() {
            // Scores have two decimals: a maximum of 3 is reached by 3.00, and by 2.999.
            Some(max) => score + 0.005 >= max,
            None => self.reported_percentage().is_some_and(|p| p >= 99.995),
        };
        if done {
            Status::Done
        } else {
            Status::Partial
        }
    }

    /// The tenant's state of the control.
    pub fn state(&self) -> State {
        self.state
    }

    /// Points still to gain: `max_score - score`, 0 when ignored or resolved by a third party
    /// (and when the maximum is unknown).
    pub fn points_to_gain(&self) -> f64 {
        if self.state.is_settled() {
            return 0.0;
        }
        self.max_score()
            .map_or(0.0, |max| round2((max - self.score()).max(0.0)))
    }

    /// Plain `implementationStatus`, if Graph sent one.
    pub fn implementation_status(&self) -> Option<Cow<'_, str>> {
        let words = self.status_words.as_deref()?.as_str();
        // The words hold one mark per number taken out: as many as are filled in.
        Some(if has_number_marks(words) {
            Cow::Owned(fill(words, &self.status_numbers))
        } else {
            Cow::Borrowed(words)
        })
    }

    /// Informational `count`, if sent.
    pub fn count(&self) -> Option<u32> {
        (self.count != NO_COUNT).then_some(self.count)
    }

    /// Informational `total`, if sent.
    pub fn total(&self) -> Option<u32> {
        (self.total != NO_COUNT).then_some(self.total)
    }

    /// When the control's service last reported (Unix seconds).
    pub fn last_synced(&self) -> Option<i64> {
        (self.last_synced != NO_TIME).then_some(i64::from(self.last_synced))
    }

    /// Where to act for tenant `tenant_id` (its Entra tenant id).
    pub fn action_url(&self, tenant_id: &str) -> Option<String> {
        self.profile.action_url(tenant_id)
    }
}
