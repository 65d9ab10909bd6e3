//! The past scores (the other end of `change_Nd`) read during one UTC day, kept in memory, and
//! the start-up load that reads them for every registered tenant before the first `/scores`
//! needs them.
//!
//! The values cannot change during the day they were read on: new readings are stamped "now",
//! after every cut-off, and the roll-up keeps each day's last value. Only a point written for
//! an earlier day (a back-fill, a reading stamped in the past) changes them: the store forgets
//! that tenant's metric here when it writes one. It knows no SQL (the store reads) and no HTTP.

use super::{Metric, Past};
use crate::model::TenantId;
use std::collections::HashMap;

/// Past scores by tenant, as [`PastCache`] hands them out (a fast hasher: the keys are the
/// registry's ids, never a caller's text).
pub type PastScores = HashMap<TenantId, Past, foldhash::fast::RandomState>;

/// A map of the registry's tenant ids, with the fast hasher.
type ByTenant<V> = HashMap<TenantId, V, foldhash::fast::RandomState>;

/// The past scores read today, per metric and tenant.
#[derive(Debug, Default)]
pub(crate) struct PastCache {
    /// The UTC day (Unix seconds of its start) the entries were read on.
    day: i64,
    /// Counts forgets: a read that started before a forget of its tenant does not keep what it
    /// read (it may predate the point that was written).
    generation: u64,
    /// Per metric, per tenant (keyed by the shared id: a lookup copies nothing).
    entries: HashMap<Metric, ByTenant<Compact>>,
    /// When (which generation) each tenant's metric was last forgotten today.
    forgotten: HashMap<Metric, ByTenant<u64>>,
}

/// What a read must fetch, and the generation it started at (for [`PastCache::fill`]).
pub(crate) struct Missing {
    /// Tenants without an entry today.
    pub(crate) tenants: Vec<TenantId>,
    /// The generation when the read started.
    generation: u64,
    /// The day it is for.
    day: i64,
}

impl Missing {
    /// The tenants as the store's read takes them.
    pub(crate) fn names(&self) -> Vec<String> {
        self.tenants.iter().map(TenantId::to_string).collect()
    }
}

/// A [`Past`] in half its room (32 bytes, not 64: no `Option` tags), NaN standing for "no point
/// that old" — no score is NaN (JSON has none, and the API writes a NaN change as `null`
/// anyway). Tens of thousands are kept (tenants × metrics).
#[derive(Debug, Clone, Copy)]
struct Compact([f64; 4]);

impl From<Past> for Compact {
    fn from(past: Past) -> Self {
        let value = |day: Option<f64>| day.unwrap_or(f64::NAN);
        Self([
            value(past.ago_1d),
            value(past.ago_7d),
            value(past.ago_30d),
            value(past.ago_90d),
        ])
    }
}

impl From<Compact> for Past {
    fn from(Compact(days): Compact) -> Self {
        let day = |value: f64| (!value.is_nan()).then_some(value);
        Self {
            ago_1d: day(days[0]),
            ago_7d: day(days[1]),
            ago_30d: day(days[2]),
            ago_90d: day(days[3]),
        }
    }
}

impl PastCache {
    /// Starts `day` (Unix seconds of a UTC midnight) when it is a new one: yesterday's entries
    /// are of other cut-offs.
    fn start(&mut self, day: i64) {
        if self.day != day {
            *self = Self {
                day,
                ..Self::default()
            };
        }
    }

    /// The tenants of `tenants` whose `metric` has no entry on `day`.
    pub(crate) fn missing(&mut self, day: i64, metric: Metric, tenants: &[TenantId]) -> Missing {
        self.start(day);
        let entries = self.entries.get(&metric);
        Missing {
            tenants: tenants
                .iter()
                .filter(|tenant| entries.is_none_or(|entries| !entries.contains_key(*tenant)))
                .cloned()
                .collect(),
            generation: self.generation,
            day,
        }
    }

    /// Keeps what a read of `missing` found (tenants without any point get all `None`), except
    /// for tenants forgotten while it ran, and for a day that has ended meanwhile.
    pub(crate) fn fill(
        &mut self,
        metric: Metric,
        missing: Missing,
        mut read: HashMap<String, Past>,
    ) -> PastScores {
        let mut found =
            PastScores::with_capacity_and_hasher(missing.tenants.len(), Default::default());
        let forgotten = self.forgotten.get(&metric);
        let keep = self.day == missing.day;
        let entries = self.entries.entry(metric).or_default();
        for tenant in missing.tenants {
            let past = read.remove(tenant.as_str()).unwrap_or_default();
            let forgotten_since = forgotten
                .and_then(|forgotten| forgotten.get(&tenant))
                .is_some_and(|generation| *generation >= missing.generation);
            if keep && !forgotten_since {
                entries.insert(tenant.clone(), past.into());
            }
            found.insert(tenant, past);
        }
        found
    }

    /// Adds to `found` the entries of `tenants` for `metric`, for those that have one.
    pub(crate) fn get_into(&self, metric: Metric, tenants: &[TenantId], found: &mut PastScores) {
        let Some(entries) = self.entries.get(&metric) else {
            return;
        };
        found.reserve(tenants.len());
        for tenant in tenants {
            if let Some(past) = entries.get(tenant) {
                found.insert(tenant.clone(), (*past).into());
            }
        }
    }

    /// The entries of `tenants` for `metric`, for those that have one.
    pub(crate) fn get(&self, metric: Metric, tenants: &[TenantId]) -> PastScores {
        let mut found = PastScores::default();
        self.get_into(metric, tenants, &mut found);
        found
    }

    /// Forgets a tenant's metric: a point of an earlier day was written.
    pub(crate) fn forget(&mut self, tenant: &str, metric: Metric) {
        let Ok(id) = TenantId::parse(tenant) else {
            return;
        };
        self.generation += 1;
        if let Some(entries) = self.entries.get_mut(&metric) {
            entries.remove(&id);
        }
        self.forgotten
            .entry(metric)
            .or_default()
            .insert(id, self.generation);
    }

    /// Forgets a tenant's metric when a point stamped `at` (Unix seconds) is of an earlier day
    /// than the entries: every cut-off is at or before the start of the day they were read on.
    pub(crate) fn forget_if_past(&mut self, tenant: &str, metric: Metric, at: i64) {
        if at < self.day {
            self.forget(tenant, metric);
        }
    }

    /// Forgets every metric of `tenants` (re-bound to another customer).
    pub(crate) fn forget_tenants(&mut self, tenants: &[String]) {
        let keys: Vec<(Metric, String)> = self
            .entries
            .iter()
            .flat_map(|(metric, entries)| {
                entries
                    .keys()
                    .filter(|tenant| tenants.iter().any(|t| t == tenant.as_str()))
                    .map(|tenant| (*metric, tenant.to_string()))
            })
            .collect();
        for (metric, tenant) in keys {
            self.forget(&tenant, metric);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_past_gives_back_what_it_was_given() {
        for past in [
            Past::default(),
            Past {
                ago_1d: Some(1.5),
                ago_7d: None,
                ago_30d: Some(-0.0),
                ago_90d: Some(0.0),
            },
        ] {
            assert_eq!(Past::from(Compact::from(past)), past);
        }
    }

    fn ids(names: &[&str]) -> Vec<TenantId> {
        names
            .iter()
            .map(|name| TenantId::parse(name).unwrap())
            .collect()
    }

    fn past(value: f64) -> Past {
        Past {
            ago_7d: Some(value),
            ..Past::default()
        }
    }

    #[test]
    fn a_read_keeps_what_it_found_and_all_none_for_tenants_without_points() {
        let mut cache = PastCache::default();
        let tenants = ids(&["a", "b"]);
        let missing = cache.missing(86_400, Metric::Device, &tenants);
        assert_eq!(missing.tenants, tenants);
        let read = HashMap::from([("a".to_owned(), past(1.0))]);
        let found = cache.fill(Metric::Device, missing, read);
        assert_eq!(found[&tenants[0]], past(1.0));
        assert_eq!(found[&tenants[1]], Past::default());
        assert!(cache
            .missing(86_400, Metric::Device, &tenants)
            .tenants
            .is_empty());
        assert_eq!(cache.get(Metric::Device, &tenants).len(), 2);
        // Another metric, or the next day, reads again.
        assert_eq!(
            cache
                .missing(86_400, Metric::Secure, &tenants)
                .tenants
                .len(),
            2
        );
        assert_eq!(
            cache
                .missing(2 * 86_400, Metric::Device, &tenants)
                .tenants
                .len(),
            2
        );
    }

    #[test]
    fn a_read_that_a_forget_overtook_is_served_but_not_kept() {
        let mut cache = PastCache::default();
        let tenants = ids(&["a", "b"]);
        let missing = cache.missing(86_400, Metric::Device, &tenants);
        // A back-fill of `a` is written while the read runs.
        cache.forget_if_past("a", Metric::Device, 0);
        let read = HashMap::from([("a".to_owned(), past(1.0)), ("b".to_owned(), past(2.0))]);
        let found = cache.fill(Metric::Device, missing, read);
        assert_eq!(found.len(), 2);
        assert_eq!(
            cache.missing(86_400, Metric::Device, &tenants).tenants,
            ids(&["a"])
        );
    }

    #[test]
    fn only_points_of_earlier_days_forget() {
        let mut cache = PastCache::default();
        let tenants = ids(&["a"]);
        let missing = cache.missing(86_400, Metric::Device, &tenants);
        cache.fill(Metric::Device, missing, HashMap::new());
        cache.forget_if_past("a", Metric::Device, 86_400 + 10);
        assert!(cache
            .missing(86_400, Metric::Device, &tenants)
            .tenants
            .is_empty());
        cache.forget_if_past("a", Metric::Device, 86_399);
        assert_eq!(
            cache
                .missing(86_400, Metric::Device, &tenants)
                .tenants
                .len(),
            1
        );
    }
}

/// The test hold on the start-up load: a test holds the load of a database URL before the
/// gateway starts, sees what `/scores` answers meanwhile, then releases it. Compiled only with
/// the `test-hooks` feature, which no product build turns on.
#[cfg(feature = "test-hooks")]
pub(crate) mod hooks {
    use parking_lot::Mutex;
    use std::collections::HashSet;
    use std::sync::LazyLock;
    use tokio::sync::Notify;

    /// The held URLs (each test has a database of its own), and the wake-up of their loads.
    static HELD: LazyLock<(Mutex<HashSet<String>>, Notify)> =
        LazyLock::new(|| (Mutex::new(HashSet::new()), Notify::new()));

    /// Holds the start-up load of the past scores of the history at `url` (as configured) until
    /// [`release_past_load`]: call it before the gateway starts.
    pub fn hold_past_load(url: &str) {
        HELD.0.lock().insert(url.to_owned());
    }

    /// Lets the start-up load of the history at `url` run.
    pub fn release_past_load(url: &str) {
        HELD.0.lock().remove(url);
        HELD.1.notify_waiters();
    }

    /// Whether the start-up load of the history at `url` is held now.
    pub fn past_load_held(url: &str) -> bool {
        HELD.0.lock().contains(url)
    }

    /// Waits while the load of `url` is held.
    pub(crate) async fn wait_while_held(url: &str) {
        loop {
            let released = HELD.1.notified();
            let mut released = std::pin::pin!(released);
            // Registered before the check: a release between the two is not missed.
            released.as_mut().enable();
            if !past_load_held(url) {
                return;
            }
            released.await;
        }
    }
}
