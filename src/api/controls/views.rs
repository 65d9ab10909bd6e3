//! What the controls routes answer: their JSON views (the OpenAPI descriptions are written for
//! API consumers) and the same as CSV rows.

use crate::api::scores::ItemErrorView;
use crate::api::views::SourceView;
use crate::controls::{Category, ControlSummary, State, Status, TenantControl};
use crate::model::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

/// One Secure Score control in one tenant: a recommendation of Microsoft Secure Score with the
/// tenant's points, its state and what to do. Texts are plain (HTML stripped, entities decoded).
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlView {
    /// The control's id (Graph's `controlName`, e.g. `AdminMFAV2`; Defender's
    /// secure-configuration checks are `scid_*`).
    pub id: String,
    /// Short title; null when Microsoft sent no profile for the control.
    pub title: Option<String>,
    /// `identity`, `data`, `device`, `apps` or `infrastructure`.
    pub category: Option<Category>,
    /// The Microsoft service it belongs to (`AzureAD`, `MDO`, `MDATP`, …).
    pub service: Option<String>,
    /// Points achieved.
    pub score: f64,
    /// Points achievable; null without a profile.
    pub max_score: Option<f64>,
    /// `100 × score / max_score` (two decimals).
    pub percentage: Option<f64>,
    /// `done` (score = max), `partial` (0 < score < max) or `todo` (score 0).
    pub status: Status,
    /// What the tenant's admins said: `default`, `ignored` (risk accepted), `third_party`
    /// (resolved through a third party) or `reviewed`.
    pub state: State,
    /// `max_score - score`; 0 when `ignored` or `third_party`.
    pub points_to_gain: f64,
    /// Microsoft's ranking (1 is the most important).
    pub rank: Option<u32>,
    /// `Core`, `Defense in Depth` or `Advanced`.
    pub tier: Option<String>,
    /// `Config`, `Review` or `Behavior`.
    pub action_type: Option<String>,
    /// Where to act (Microsoft's portal, for this tenant).
    pub action_url: Option<String>,
    /// `Low`, `Moderate`, `High` or `Unknown`.
    pub user_impact: Option<String>,
    /// `Low`, `Moderate`, `High` or `Unknown`.
    pub implementation_cost: Option<String>,
    /// Threats the control mitigates.
    pub threats: Vec<String>,
    /// How the control stands in the tenant, as Microsoft words it.
    pub implementation_status: Option<String>,
    /// Users or objects counted, where Microsoft gives it (informational: its meaning changed
    /// once).
    pub count: Option<u32>,
    /// Users or objects in scope, where Microsoft gives it (informational).
    pub total: Option<u32>,
    /// Retired by Microsoft.
    pub deprecated: bool,
    /// When the control's service last reported (RFC 3339).
    pub last_synced: Option<String>,
}

impl ControlView {
    /// The view of one of `entra_tenant`'s controls.
    pub fn new(control: &TenantControl, entra_tenant: &str) -> Self {
        let profile = control.profile();
        let text = |value: &Option<Box<str>>| value.as_deref().map(str::to_owned);
        Self {
            id: control.id().to_owned(),
            title: text(&profile.title),
            category: control.category(),
            service: text(&profile.service),
            score: control.score(),
            max_score: control.max_score(),
            percentage: control.percentage(),
            status: control.status(),
            state: control.state(),
            points_to_gain: control.points_to_gain(),
            rank: profile.rank,
            tier: text(&profile.tier),
            action_type: text(&profile.action_type),
            action_url: control.action_url(entra_tenant),
            user_impact: text(&profile.user_impact),
            implementation_cost: text(&profile.implementation_cost),
            threats: profile.threats.iter().map(|t| t.to_string()).collect(),
            implementation_status: control.implementation_status().map(|s| s.into_owned()),
            count: control.count(),
            total: control.total(),
            deprecated: profile.deprecated,
            last_synced: control.last_synced().and_then(|seconds| {
                let at = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
                Some(rfc3339(at.into()))
            }),
        }
    }
}

/// A tenant's Secure Score controls, from its newest snapshot, with the snapshot's score.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantControls {
    /// The gateway's id of the tenant.
    pub tenant: String,
    /// When Microsoft computed the snapshot (Graph's `createdDateTime`, as written).
    pub time: String,
    /// When the gateway fetched it (RFC 3339, UTC).
    pub fetched_at: String,
    /// Seconds since `fetched_at`.
    pub age_seconds: u64,
    /// Where the score came from, as on the score route.
    pub source: SourceView,
    /// The tenant's Microsoft Secure Score (points).
    pub score: f64,
    /// Points achievable with the tenant's licences.
    pub max_score: Option<f64>,
    /// The controls that pass the filters, in the requested order.
    pub controls: Vec<ControlView>,
}

/// One control across tenants: how many have it done, partial, to do, ignored or resolved by
/// a third party, and the points all of them could still gain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlRow {
    /// The control's id.
    pub id: String,
    /// Short title; null when Microsoft sent no profile for it.
    pub title: Option<String>,
    /// `identity`, `data`, `device`, `apps` or `infrastructure`.
    pub category: Option<Category>,
    /// The Microsoft service it belongs to.
    pub service: Option<String>,
    /// Points achievable per tenant.
    pub max_score: Option<f64>,
    /// Tenants with every point (neither ignored nor third party).
    pub done: u32,
    /// Tenants with some points.
    pub partial: u32,
    /// Tenants with none.
    pub todo: u32,
    /// Tenants that accepted the risk (whatever their score).
    pub ignored: u32,
    /// Tenants that resolved it through a third party (whatever their score).
    pub third_party: u32,
    /// Points all tenants could still gain (ignored and third-party ones gain none).
    pub points_to_gain: f64,
    /// Tenants still to do (partial or todo), most points to gain first: at most 20.
    pub todo_tenants: Vec<String>,
    /// How many tenants are still to do.
    pub todo_tenants_count: u32,
}

impl From<&ControlSummary<String>> for ControlRow {
    fn from(row: &ControlSummary<String>) -> Self {
        let profile = &row.profile;
        Self {
            id: row.id().to_owned(),
            title: profile.title.as_deref().map(str::to_owned),
            category: row.category,
            service: profile.service.as_deref().map(str::to_owned),
            max_score: profile.max_score,
            done: row.done,
            partial: row.partial,
            todo: row.todo,
            ignored: row.ignored,
            third_party: row.third_party,
            points_to_gain: row.points_to_gain,
            todo_tenants: row.todo_tenants.clone(),
            todo_tenants_count: row.todo_tenants_count,
        }
    }
}

/// A tenant whose controls are not in the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedTenantView {
    /// The gateway's id of the tenant.
    pub tenant: String,
    /// Why, as the single-tenant route would have answered.
    pub error: ItemErrorView,
}

/// Controls across the tenants the caller may see that have Microsoft Secure Score: "which
/// control do we roll out next".
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlList {
    /// When the answer was put together (RFC 3339, UTC).
    pub generated_at: String,
    /// `true` when every matching tenant's controls are in; `false` when any is in `failed`.
    pub complete: bool,
    /// How many tenants' controls are summed up.
    pub tenants: usize,
    /// This page's controls, in the requested order.
    pub controls: Vec<ControlRow>,
    /// Matching tenants whose controls are not in (not ready by `timeout_ms`, or failing).
    pub failed: Vec<FailedTenantView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn number(value: Option<f64>) -> String {
    value.map(|value| value.to_string()).unwrap_or_default()
}

fn whole(value: Option<u32>) -> String {
    value.map(|value| value.to_string()).unwrap_or_default()
}

/// The CSV columns of `GET /tenants/{id}/controls?format=csv`.
pub const TENANT_CONTROLS_CSV: [&str; 23] = [
    "tenant",
    "id",
    "title",
    "category",
    "service",
    "score",
    "max_score",
    "percentage",
    "status",
    "state",
    "points_to_gain",
    "rank",
    "tier",
    "action_type",
    "action_url",
    "user_impact",
    "implementation_cost",
    "threats",
    "implementation_status",
    "count",
    "total",
    "deprecated",
    "last_synced",
];

/// One row of [`TENANT_CONTROLS_CSV`]; lists joined with `;`.
pub fn tenant_control_row(tenant: &str, control: ControlView) -> Vec<String> {
    let text = |value: Option<String>| value.unwrap_or_default();
    vec![
        tenant.to_owned(),
        control.id,
        text(control.title),
        control
            .category
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        text(control.service),
        control.score.to_string(),
        number(control.max_score),
        number(control.percentage),
        control.status.as_str().to_owned(),
        control.state.as_str().to_owned(),
        control.points_to_gain.to_string(),
        whole(control.rank),
        text(control.tier),
        text(control.action_type),
        text(control.action_url),
        text(control.user_impact),
        text(control.implementation_cost),
        control.threats.join(";"),
        text(control.implementation_status),
        whole(control.count),
        whole(control.total),
        control.deprecated.to_string(),
        text(control.last_synced),
    ]
}

/// The CSV columns of `GET /controls?format=csv`.
pub const CONTROL_LIST_CSV: [&str; 13] = [
    "id",
    "title",
    "category",
    "service",
    "max_score",
    "done",
    "partial",
    "todo",
    "ignored",
    "third_party",
    "points_to_gain",
    "todo_tenants",
    "todo_tenants_count",
];

/// One row of [`CONTROL_LIST_CSV`]; tenant ids joined with `;`.
pub fn control_list_row(row: ControlRow) -> Vec<String> {
    vec![
        row.id,
        row.title.unwrap_or_default(),
        row.category
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        row.service.unwrap_or_default(),
        number(row.max_score),
        row.done.to_string(),
        row.partial.to_string(),
        row.todo.to_string(),
        row.ignored.to_string(),
        row.third_party.to_string(),
        row.points_to_gain.to_string(),
        row.todo_tenants.join(";"),
        row.todo_tenants_count.to_string(),
    ]
}
