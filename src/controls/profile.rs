//! A control's profile as scoregate keeps it: plain texts, one copy per control and version
//! shared by every tenant (see [`super::Interner`]), and a tenant's profiles: the shared set
//! plus that tenant's states.

use super::kinds::{Category, State};
use std::sync::Arc;

/// Marks where a profile's `actionUrl` named the tenant it was read from (`?tid=…`), so that
/// one copy serves every tenant: a private-use character, which no URL contains unescaped.
pub(crate) const TENANT_MARK: &str = "\u{E000}";

/// A control's metadata in plain text, the same for every tenant that has the same version:
/// shared as `Arc<Profile>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The control's id (`AdminMFAV2`, `scid_2010`, …).
    pub id: Box<str>,
    /// Short title; none when Graph sent no profile for the control.
    pub title: Option<Box<str>>,
    /// The category the profile names (a snapshot entry's own category comes first).
    pub category: Option<Category>,
    /// The service (`AzureAD`, `MDO`, `MDATP`, …).
    pub service: Option<Box<str>>,
    /// The control's maximum points.
    pub max_score: Option<f64>,
    /// Microsoft's ranking (1 is the most important).
    pub rank: Option<u32>,
    /// `Core`, `Defense in Depth` or `Advanced`.
    pub tier: Option<Box<str>>,
    /// `Config`, `Review` or `Behavior`.
    pub action_type: Option<Box<str>>,
    /// Where to act, with [`TENANT_MARK`] where it named the tenant.
    pub(crate) action_url: Option<Box<str>>,
    /// How to do it (plain text), with [`TENANT_MARK`] where it named the tenant.
    pub(crate) remediation: Option<Box<str>>,
    /// What doing it changes for users (plain text), with [`TENANT_MARK`] likewise.
    pub(crate) remediation_impact: Option<Box<str>>,
    /// `Low`, `Moderate`, `High` or `Unknown`.
    pub implementation_cost: Option<Box<str>>,
    /// `Low`, `Moderate`, `High` or `Unknown`.
    pub user_impact: Option<Box<str>>,
    /// Threats the control mitigates.
    pub threats: Box<[Box<str>]>,
    /// Retired by Microsoft.
    pub deprecated: bool,
    /// Fingerprint of what Graph sent (128 bits): equal versions share one copy.
    pub(crate) fingerprint: [u64; 2],
}

impl Profile {
    /// Where to act for tenant `tenant_id` (the Entra tenant id the profile was read for).
    pub fn action_url(&self, tenant_id: &str) -> Option<String> {
        self.action_url
            .as_deref()
            .map(|url| url.replace(TENANT_MARK, tenant_id))
    }

    /// How to do it, in plain text, for tenant `tenant_id`.
    pub fn remediation(&self, tenant_id: &str) -> Option<String> {
        self.remediation
            .as_deref()
            .map(|text| text.replace(TENANT_MARK, tenant_id))
    }

    /// What doing it changes for users, in plain text, for tenant `tenant_id`.
    pub fn remediation_impact(&self, tenant_id: &str) -> Option<String> {
        self.remediation_impact
            .as_deref()
            .map(|text| text.replace(TENANT_MARK, tenant_id))
    }

    /// Whether this is a stand-in for a control Graph sent no profile for.
    pub fn is_bare(&self) -> bool {
        self.title.is_none() && self.max_score.is_none()
    }
}

/// The profiles of a set of controls, sorted by id: what most tenants share whole.
#[derive(Debug, PartialEq)]
pub struct ProfileSet {
    /// Sorted by `id`, no duplicates.
    profiles: Box<[Arc<Profile>]>,
}

impl ProfileSet {
    /// A set of `profiles` (sorted by id; of equal ids the first is kept).
    pub(crate) fn new(mut profiles: Vec<Arc<Profile>>) -> Self {
        profiles.sort_by(|a, b| a.id.cmp(&b.id));
        profiles.dedup_by(|later, earlier| later.id == earlier.id);
        Self {
            profiles: profiles.into_boxed_slice(),
        }
    }

    /// Position of control `id`.
    fn position(&self, id: &str) -> Option<usize> {
        self.profiles
            .binary_search_by(|profile| (*profile.id).cmp(id))
            .ok()
    }

    /// The profiles, sorted by id.
    pub fn profiles(&self) -> &[Arc<Profile>] {
        &self.profiles
    }
}

/// One tenant's profiles: a shared [`ProfileSet`] and the tenant's states (only those that are
/// not `default`).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantProfiles {
    /// The profiles (shared by every tenant with the same ones).
    pub(crate) set: Arc<ProfileSet>,
    /// (position in `set`, state) of the controls whose state is not `default`, sorted.
    pub(crate) states: Box<[(u32, State)]>,
}

impl TenantProfiles {
    /// Control `id`'s profile and state in the tenant.
    pub fn get(&self, id: &str) -> Option<(&Arc<Profile>, State)> {
        let position = self.set.position(id)?;
        let profile = self.set.profiles.get(position)?;
        let state = u32::try_from(position)
            .ok()
            .and_then(|key| self.states.binary_search_by_key(&key, |(at, _)| *at).ok())
            .and_then(|found| self.states.get(found))
            .map_or(State::Default, |(_, state)| *state);
        Some((profile, state))
    }

    /// The shared set.
    pub fn set(&self) -> &Arc<ProfileSet> {
        &self.set
    }

    /// How many profiles.
    pub fn len(&self) -> usize {
        self.set.profiles.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.set.profiles.is_empty()
    }
}
