//! One copy of what every tenant shares: profiles (per control and version), sets of profiles,
//! and the words of the texts controls repeat (`implementationStatus`, its numbers taken out:
//! "You have 3 of 120 users…" and "You have 0 of 7 users…" share one copy).
//!
//! Ten thousand tenants with 70 controls each hold 700,000 controls, but only a few hundred
//! profile versions and a few thousand distinct status texts: the interner hands out an `Arc`
//! of the first copy it saw of each. It holds them weakly, so a version no tenant uses any more
//! is freed; dead entries are swept when the tables have doubled since the last sweep (amortised
//! O(1), memory bounded by twice what is live).

use super::graph::ControlProfile;
use super::kinds::Category;
use super::profile::{Profile, ProfileSet, TenantProfiles, TENANT_MARK};
use super::text::{plain_text, Template};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Weak};

/// Longest plain title kept, in characters.
const MAX_TITLE_CHARS: usize = 300;
/// Longest plain remediation (and remediation impact) kept, in characters.
const MAX_REMEDIATION_CHARS: usize = 4_000;
/// Longest plain `implementationStatus` kept, in characters.
pub(crate) const MAX_STATUS_CHARS: usize = 1_000;
/// Longest short field (tier, service, cost, impact, threat, id) kept, in characters.
const MAX_SHORT_CHARS: usize = 200;
/// Most threats kept per profile.
const MAX_THREATS: usize = 20;
/// Longest action URL kept, in bytes (longer ones are dropped, not cut: a cut URL is wrong).
const MAX_URL_BYTES: usize = 2_048;

/// Weak references by hash; several per hash when contents collide.
struct Pool<T: ?Sized> {
    entries: HashMap<u64, Vec<Weak<T>>>,
    /// Sweep when there are more entries than this.
    sweep_at: usize,
}

impl<T: ?Sized> Default for Pool<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_at: 1_024,
        }
    }
}

impl<T: ?Sized> Pool<T> {
    /// The live value under `key` that `same` accepts.
    fn find(&self, key: u64, same: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        self.entries
            .get(&key)?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|value| same(value))
    }

    fn insert(&mut self, key: u64, value: &Arc<T>) {
        self.entries
            .entry(key)
            .or_default()
            .push(Arc::downgrade(value));
        if self.entries.len() > self.sweep_at {
            self.entries.retain(|_, values| {
                values.retain(|value| value.strong_count() > 0);
                !values.is_empty()
            });
            self.sweep_at = (self.entries.len() * 2).max(1_024);
        }
    }

    /// Values still alive.
    fn live(&self) -> usize {
        self.entries
            .values()
            .flatten()
            .filter(|value| value.strong_count() > 0)
            .count()
    }
}

#[derive(Default)]
struct Pools {
    profiles: Pool<Profile>,
    sets: Pool<ProfileSet>,
    /// `Arc<String>`, not `Arc<str>`: a thin pointer, 8 bytes in each [`super::TenantControl`].
    texts: Pool<String>,
}

/// How many shared copies are alive (for tests and the memory figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternerCounts {
    /// Profile versions.
    pub profiles: usize,
    /// Profile sets.
    pub sets: usize,
    /// Texts.
    pub texts: usize,
}

/// Shares profiles, profile sets and texts across tenants. One per process; cheap to share.
pub struct Interner {
    pools: Mutex<Pools>,
    /// Two independent keys: a 128-bit fingerprint tells profile versions apart.
    keys: [RandomState; 2],
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interner")
            .field("live", &self.counts())
            .finish()
    }
}

/// Replaces every occurrence of the tenant ids (any ASCII case) in `url` by [`TENANT_MARK`].
fn mark_tenant(url: &str, tenant_ids: &[&str]) -> String {
    let mut marked = url.to_owned();
    for id in tenant_ids
        .iter()
        .map(|id| id.trim())
        .filter(|id| id.len() >= 8)
    {
        let mut out = String::with_capacity(marked.len());
        let mut rest = marked.as_str();
        while let Some(at) = rest
            .as_bytes()
            .windows(id.len())
            .position(|window| window.eq_ignore_ascii_case(id.as_bytes()))
        {
            out.push_str(&rest[..at]);
            out.push_str(TENANT_MARK);
            rest = &rest[at + id.len()..];
        }
        out.push_str(rest);
        marked = out;
    }
    marked
}

fn short(text: Option<&str>) -> Option<Box<str>> {
    let text = plain_text(text?, MAX_SHORT_CHARS);
    (!text.is_empty()).then(|| text.into_boxed_str())
}

fn long(text: Option<&str>, max_chars: usize) -> Option<Box<str>> {
    let text = plain_text(text?, max_chars);
    (!text.is_empty()).then(|| text.into_boxed_str())
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self {
            pools: Mutex::new(Pools::default()),
            keys: [RandomState::new(), RandomState::new()],
        }
    }

    fn fingerprint(&self, value: &impl Hash) -> [u64; 2] {
        [self.keys[0].hash_one(value), self.keys[1].hash_one(value)]
    }

    /// Tenant `tenant_id`'s profiles from the profiles Graph sent (all pages), shared where
    /// other tenants have the same. Profiles without an id are skipped.
    pub fn tenant_profiles(&self, tenant_id: &str, profiles: &[ControlProfile]) -> TenantProfiles {
        let mut shared = Vec::with_capacity(profiles.len());
        let mut states = Vec::new();
        for raw in profiles {
            let Some(profile) = self.profile(raw, tenant_id) else {
                continue;
            };
            let state = raw.state();
            if state != super::State::Default {
                states.push((profile.id.clone(), state));
            }
            shared.push(profile);
        }
        let set = self.set(shared);
        let mut positions: Vec<(u32, super::State)> = states
            .iter()
            .filter_map(|(id, state)| {
                let position = set.profiles().iter().position(|p| p.id == *id)?;
                Some((u32::try_from(position).ok()?, *state))
            })
            .collect();
        positions.sort_unstable_by_key(|(position, _)| *position);
        positions.dedup_by_key(|(position, _)| *position);
        TenantProfiles {
            set,
            states: positions.into_boxed_slice(),
        }
    }

    /// The shared copy of one profile as read for `tenant_id`.
    fn profile(&self, raw: &ControlProfile, tenant_id: &str) -> Option<Arc<Profile>> {
        let id: String = raw
            .id
            .as_deref()?
            .trim()
            .chars()
            .take(MAX_SHORT_CHARS)
            .collect();
        if id.is_empty() {
            return None;
        }
        let tenant_ids = [
            tenant_id,
            raw.azure_tenant_id.as_deref().unwrap_or_default(),
        ];
        let action_url = raw
            .action_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty() && url.len() <= MAX_URL_BYTES)
            .map(|url| mark_tenant(url, &tenant_ids));
        // Remediation texts link to the tenant's portal too (`?tid=…`): marked like the URL, so
        // that tenants share them and each sees its own id.
        let remediation = raw
            .remediation
            .as_deref()
            .map(|text| mark_tenant(text, &tenant_ids));
        let remediation_impact = raw
            .remediation_impact
            .as_deref()
            .map(|text| mark_tenant(text, &tenant_ids));
        let fingerprint = self.fingerprint(&(
            &id,
            &raw.title,
            raw.max_score.map(f64::to_bits),
            raw.rank.map(f64::to_bits),
            (&raw.tier, &raw.service, &raw.action_type, &action_url),
            (&remediation, &remediation_impact),
            (&raw.implementation_cost, &raw.user_impact, &raw.threats),
            (raw.deprecated, &raw.control_category),
        ));
        let key = fingerprint[0];
        if let Some(found) = self
            .pools
            .lock()
            .profiles
            .find(key, |p| p.fingerprint == fingerprint && *p.id == *id)
        {
            return Some(found);
        }
        // Converted outside the lock: HTML to text is the costly part.
        let profile = Arc::new(Profile {
            id: id.into_boxed_str(),
            title: long(raw.title.as_deref(), MAX_TITLE_CHARS),
            category: raw
                .control_category
                .as_deref()
                .and_then(Category::from_graph),
            service: short(raw.service.as_deref()),
            max_score: raw
                .max_score
                .filter(|max| *max >= 0.0 && *max <= 1_000_000.0),
            rank: raw
                .rank
                .filter(|rank| *rank >= 0.0 && *rank <= f64::from(u32::MAX))
                .map(|rank| rank.round() as u32),
            tier: short(raw.tier.as_deref()),
            action_type: short(raw.action_type.as_deref()),
            action_url: action_url.map(String::into_boxed_str),
            remediation: long(remediation.as_deref(), MAX_REMEDIATION_CHARS),
            remediation_impact: long(remediation_impact.as_deref(), MAX_REMEDIATION_CHARS),
            implementation_cost: short(raw.implementation_cost.as_deref()),
            user_impact: short(raw.user_impact.as_deref()),
            threats: raw
                .threats
                .iter()
                .take(MAX_THREATS)
                .filter_map(|threat| short(Some(threat)))
                .collect(),
            deprecated: raw.deprecated.unwrap_or(false),
            fingerprint,
        });
        let mut pools = self.pools.lock();
        // Another thread may have made the same copy meanwhile: keep the first.
        if let Some(found) = pools
            .profiles
            .find(key, |p| p.fingerprint == fingerprint && p.id == profile.id)
        {
            return Some(found);
        }
        pools.profiles.insert(key, &profile);
        Some(profile)
    }

    /// The shared stand-in profile of a control Graph sent no profile for.
    pub(crate) fn bare_profile(&self, id: &str, category: Option<Category>) -> Arc<Profile> {
        let id: String = id.trim().chars().take(MAX_SHORT_CHARS).collect();
        let fingerprint = self.fingerprint(&("bare", &id, category));
        let key = fingerprint[0];
        let mut pools = self.pools.lock();
        if let Some(found) = pools
            .profiles
            .find(key, |p| p.fingerprint == fingerprint && *p.id == *id)
        {
            return found;
        }
        let profile = Arc::new(Profile {
            id: id.into_boxed_str(),
            title: None,
            category,
            service: None,
            max_score: None,
            rank: None,
            tier: None,
            action_type: None,
            action_url: None,
            remediation: None,
            remediation_impact: None,
            implementation_cost: None,
            user_impact: None,
            threats: Box::new([]),
            deprecated: false,
            fingerprint,
        });
        pools.profiles.insert(key, &profile);
        profile
    }

    /// The shared set of exactly these profiles.
    fn set(&self, profiles: Vec<Arc<Profile>>) -> Arc<ProfileSet> {
        let set = ProfileSet::new(profiles);
        let pointers: Vec<usize> = set
            .profiles()
            .iter()
            .map(|p| Arc::as_ptr(p) as *const u8 as usize)
            .collect();
        let key = self.keys[0].hash_one(&pointers);
        let mut pools = self.pools.lock();
        let same = |other: &ProfileSet| {
            other.profiles().len() == set.profiles().len()
                && other
                    .profiles()
                    .iter()
                    .zip(set.profiles())
                    .all(|(a, b)| Arc::ptr_eq(a, b))
        };
        if let Some(found) = pools.sets.find(key, same) {
            return found;
        }
        let set = Arc::new(set);
        pools.sets.insert(key, &set);
        set
    }

    /// `html` as plain text with its numbers taken out, the words shared with every text that
    /// differs only in its numbers (none when it is empty).
    pub(crate) fn status_text(&self, html: &str) -> Option<(Arc<String>, Template)> {
        let text = plain_text(html, MAX_STATUS_CHARS);
        if text.is_empty() {
            return None;
        }
        let mut template = Template::of(&text);
        let words = std::mem::take(&mut template.text);
        let key = self.keys[0].hash_one(words.as_str());
        let mut pools = self.pools.lock();
        if let Some(found) = pools.texts.find(key, |other| *other == *words) {
            return Some((found, template));
        }
        let shared = Arc::new(words);
        pools.texts.insert(key, &shared);
        Some((shared, template))
    }

    /// How many shared copies are alive.
    pub fn counts(&self) -> InternerCounts {
        let pools = self.pools.lock();
        InternerCounts {
            profiles: pools.profiles.live(),
            sets: pools.sets.live(),
            texts: pools.texts.live(),
        }
    }
}
