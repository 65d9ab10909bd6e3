//! What Graph sends about controls, read leniently: the entries of a snapshot's
//! `controlScores` and the pages of `secureScoreControlProfiles`.
//!
//! Both are OData open types and real answers drift: numbers arrive as strings (`"0.0"`,
//! `"1"`), booleans as strings (`"true"`), fields go missing or null, unknown fields appear.
//! Every field here reads through [`crate::wire::lenient`], so a value of an unexpected type is
//! none, never a failed answer; unknown fields are ignored. Texts stay as Graph wrote them
//! (HTML); [`super::text`] makes them plain.

use super::kinds::State;
use crate::wire::lenient;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One entry of a snapshot's `controlScores`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlScoreEntry {
    /// `Identity`, `Data`, `Device`, `Apps` or `Infrastructure`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub control_category: Option<String>,
    /// The control's id: its profile's `id`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub control_name: Option<String>,
    /// What the control is about (HTML).
    #[serde(default, deserialize_with = "lenient::text")]
    pub description: Option<String>,
    /// Points achieved.
    #[serde(default, deserialize_with = "lenient::number")]
    pub score: Option<f64>,
    /// Undocumented: points achieved as a percentage of the control's maximum.
    #[serde(default, deserialize_with = "lenient::number")]
    pub score_in_percentage: Option<f64>,
    /// Undocumented: how the control stands in the tenant (free text or HTML).
    #[serde(default, deserialize_with = "lenient::text")]
    pub implementation_status: Option<String>,
    /// Undocumented: when the control's service last reported (RFC 3339).
    #[serde(default, deserialize_with = "lenient::text")]
    pub last_synced: Option<String>,
    /// Undocumented: whether the feature is on (`"true"` / `"false"` strings in real answers).
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub on: Option<bool>,
    /// Undocumented, informational: users or objects counted (its meaning flipped once).
    #[serde(default, deserialize_with = "lenient::number")]
    pub count: Option<f64>,
    /// Undocumented, informational: users or objects in scope.
    #[serde(default, deserialize_with = "lenient::number")]
    pub total: Option<f64>,
}

/// The controls of one `secureScores` snapshot (the rest of the snapshot is ignored here).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotControls {
    /// When the snapshot was taken.
    #[serde(default, deserialize_with = "lenient::text")]
    pub created_date_time: Option<String>,
    /// Its controls; an entry that is not an object is skipped.
    #[serde(default, deserialize_with = "lenient::list")]
    pub control_scores: Vec<ControlScoreEntry>,
}

/// A `secureScores` body read for its controls only: each snapshot's [`SnapshotControls`],
/// newest first (for the same bytes the score is read from).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SecureScoresControls {
    /// The snapshots; an item that is not an object is skipped.
    #[serde(default, deserialize_with = "lenient::list")]
    pub value: Vec<SnapshotControls>,
}

/// One page of `GET /v1.0/security/secureScoreControlProfiles`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ControlProfilesPage {
    /// The next page's absolute URL, to follow as it is; none on the last page.
    #[serde(
        rename = "@odata.nextLink",
        default,
        deserialize_with = "lenient::text"
    )]
    pub next_link: Option<String>,
    /// The profiles of this page; an item that is not an object is skipped.
    #[serde(default, deserialize_with = "lenient::list")]
    pub value: Vec<ControlProfile>,
}

/// One `secureScoreControlProfile`: a control's metadata and its state in the tenant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlProfile {
    /// The control's id (a snapshot entry's `controlName`).
    #[serde(default, deserialize_with = "lenient::text")]
    pub id: Option<String>,
    /// The tenant the profile was read from.
    #[serde(default, deserialize_with = "lenient::text")]
    pub azure_tenant_id: Option<String>,
    /// Short title.
    #[serde(default, deserialize_with = "lenient::text")]
    pub title: Option<String>,
    /// The control's maximum points (the only per-control maximum Graph gives).
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_score: Option<f64>,
    /// Microsoft's ranking (1 is the most important).
    #[serde(default, deserialize_with = "lenient::number")]
    pub rank: Option<f64>,
    /// `Core`, `Defense in Depth` or `Advanced`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub tier: Option<String>,
    /// The service the control belongs to (`AzureAD`, `MDO`, `MDATP`, …).
    #[serde(default, deserialize_with = "lenient::text")]
    pub service: Option<String>,
    /// `Config`, `Review` or `Behavior`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub action_type: Option<String>,
    /// Where to act (may name the tenant in `?tid=`).
    #[serde(default, deserialize_with = "lenient::text")]
    pub action_url: Option<String>,
    /// How to do it (HTML).
    #[serde(default, deserialize_with = "lenient::text")]
    pub remediation: Option<String>,
    /// What doing it changes for users (HTML).
    #[serde(default, deserialize_with = "lenient::text")]
    pub remediation_impact: Option<String>,
    /// `Low`, `Moderate`, `High` or `Unknown`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub implementation_cost: Option<String>,
    /// `Low`, `Moderate`, `High`, `Unknown` or null.
    #[serde(default, deserialize_with = "lenient::text")]
    pub user_impact: Option<String>,
    /// Threats the control mitigates.
    #[serde(default, deserialize_with = "lenient::list")]
    pub threats: Vec<String>,
    /// Retired by Microsoft.
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub deprecated: Option<bool>,
    /// Undocumented in the reference, present in real answers: the category.
    #[serde(default, deserialize_with = "lenient::text")]
    pub control_category: Option<String>,
    /// The history of the control's state in the tenant.
    #[serde(default, deserialize_with = "lenient::list")]
    pub control_state_updates: Vec<ControlStateUpdate>,
}

/// One entry of a profile's `controlStateUpdates`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlStateUpdate {
    /// `Default`, `Ignored`, `ThirdParty` or `Reviewed`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub state: Option<String>,
    /// Who set it.
    #[serde(default, deserialize_with = "lenient::text")]
    pub updated_by: Option<String>,
    /// When (RFC 3339; null on the untouched `Default` entry).
    #[serde(default, deserialize_with = "lenient::text")]
    pub updated_date_time: Option<String>,
    /// Why.
    #[serde(default, deserialize_with = "lenient::text")]
    pub comment: Option<String>,
}

impl ControlProfile {
    /// The control's state in the tenant: that of the update with the newest `updatedDateTime`
    /// (an update without a readable time is older than any with one; of equals, the later in
    /// the list wins, as Graph appends). Unknown states and no updates are `Default`.
    pub fn state(&self) -> State {
        self.control_state_updates
            .iter()
            .enumerate()
            .filter_map(|(position, update)| {
                let state = update.state.as_deref().and_then(State::from_graph)?;
                Some((
                    parse_time(update.updated_date_time.as_deref()),
                    position,
                    state,
                ))
            })
            .max_by_key(|(at, position, _)| (*at, *position))
            .map_or(State::Default, |(_, _, state)| state)
    }
}

/// Unix seconds of an RFC 3339 time, if it reads as one.
pub(crate) fn parse_time(text: Option<&str>) -> Option<i64> {
    let text = text?.trim();
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}
