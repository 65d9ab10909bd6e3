//! Where good readings are kept: the cached [`Entry`], the [`ScoreStore`] seam (with [`Claim`]
//! for single flight across processes), and the in-process [`LocalStore`].

use super::ScoreKey;
use crate::tenants::Registry;
use crate::upstream::Reading;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A cached reading and its freshness, fixed when it was stored.
#[derive(Debug)]
pub struct Entry {
    /// The reading.
    pub reading: Reading,
    /// When it was stored (a shared store keeps wall-clock time and converts).
    pub stored_at: Instant,
    /// The fresh window of this entry, jittered so that tenants loaded together expire apart.
    pub fresh_for: Duration,
    /// The reading as the API renders it, made by the first request that serves it (see
    /// [`Served::rendered`](super::Served::rendered)); empty until then, so that readings
    /// nobody asks for singly cost no copy.
    rendered: OnceLock<Box<[u8]>>,
}

impl Entry {
    /// An entry for `reading`, stored at `stored_at`, fresh for `fresh_for`.
    pub fn new(reading: Reading, stored_at: Instant, fresh_for: Duration) -> Self {
        Self {
            reading,
            stored_at,
            fresh_for,
            rendered: OnceLock::new(),
        }
    }

    /// The rendering of this entry's reading: `render`'s bytes, made once per entry (that is,
    /// once per fetch) whoever asks first.
    pub(super) fn rendered(&self, render: impl FnOnce(&Reading) -> Vec<u8>) -> &[u8] {
        self.rendered
            .get_or_init(|| render(&self.reading).into_boxed_slice())
    }
}

/// Where good readings are kept: a map in process ([`LocalStore`]); a shared (Redis) second
/// level behind the same calls when several replicas serve the same tenants. The store only
/// keeps: freshness, single flight and stale-if-error are decided by [`ScoreCache`](super::ScoreCache).
#[async_trait::async_trait]
pub trait ScoreStore: Send + Sync {
    /// The entry under `key`, if any.
    async fn get(&self, key: &ScoreKey) -> Option<Arc<Entry>>;
    /// The entry under `key` when this process can tell without waiting (no I/O): a warm
    /// `/scores` answers its fresh tenants through this, without a future per tenant. `None`
    /// means "ask [`ScoreStore::get`]", which a store shared between processes always does.
    /// `now` is the caller's clock reading (one per fan-out, not one per tenant).
    fn get_now(&self, _key: &ScoreKey, _now: Instant) -> Option<Arc<Entry>> {
        None
    }
    /// Stores `entry` under `key`, replacing what was there; `entra_tenant` is the Entra tenant
    /// it was fetched from (a shared store files it under that customer, whatever a reload
    /// made of the tenant id meanwhile).
    async fn insert(&self, key: ScoreKey, entry: Arc<Entry>, entra_tenant: &str);
    /// Drops the entries of tenants that left the registry, and of metrics a tenant no longer
    /// has.
    async fn retain(&self, registry: &Registry);
    /// Drops the entry under `key` wherever this process could serve it from (a tenant id now
    /// standing for another Entra tenant: nobody may be served its previous reading; a shared
    /// level names the Entra tenant in its keys, so the previous reading is not found there).
    async fn remove(&self, key: &ScoreKey);
    /// Claims the right to fetch `key` among every process sharing the store, for `hold` at
    /// most; a reading another process stored at or after `since` is the answer instead. A
    /// store of one process has nobody to ask: it always fetches.
    async fn claim(&self, _key: &ScoreKey, _since: SystemTime, _hold: Duration) -> Claim {
        Claim::Fetch(None)
    }
    /// Gives back a claim once the fetch stored its reading (or failed).
    async fn release(&self, _key: &ScoreKey, _token: String) {}
    /// Waits, until `until` at most, for the reading another process fetches to be stored
    /// (stored at or after `since`); `None` when its fetch ended without one, or time ran out.
    async fn wait_for(
        &self,
        _key: &ScoreKey,
        _since: SystemTime,
        _until: Instant,
    ) -> Option<Arc<Entry>> {
        None
    }
}

/// Who fetches a key when several processes share a [`ScoreStore`].
#[derive(Debug)]
pub enum Claim {
    /// This process fetches; the token (if the store handed one) goes back to
    /// [`ScoreStore::release`].
    Fetch(Option<String>),
    /// Another process fetches: wait for its reading with [`ScoreStore::wait_for`].
    Wait,
    /// Another process stored a reading since the flight began: it is the answer.
    Ready(Arc<Entry>),
}

/// The in-process score store: one map, bounded, and dropping entries too old even for
/// stale-if-error.
///
/// A map behind a read-write lock rather than a general cache (moka, before): its keys are the
/// registry's (tenants × metrics), known and bounded, so an admission and eviction policy buys
/// nothing, and moka's bookkeeping per entry (the key copied into its nodes, two deque nodes,
/// timestamps: a few hundred bytes) was over 10 MB at 10,000 tenants with three metrics
/// (docs/performance.md). A read is a shared lock and a reference count.
pub struct LocalStore {
    /// Keyed by the registry's tenants and metrics (nothing a caller sends is inserted): the
    /// fast hasher, not SipHash (a warm `/scores` looks a thousand keys up).
    entries: RwLock<HashMap<ScoreKey, Arc<Entry>, foldhash::fast::RandomState>>,
    /// At most this many entries (`[cache] max_entries`).
    max_entries: usize,
    /// An entry older than this is gone (fresh window plus stale-if-error).
    time_to_live: Duration,
}

impl LocalStore {
    /// At most `max_entries`, each kept for `time_to_live` (fresh plus stale-if-error).
    pub fn new(max_entries: u64, time_to_live: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::default()),
            max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX).max(1),
            time_to_live,
        }
    }

    fn live(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.stored_at) <= self.time_to_live
    }

    fn read(&self, key: &ScoreKey, now: Instant) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .get(key)
            .filter(|entry| self.live(entry, now))
            .cloned()
    }

    /// Stores `entry` under `key`, replacing what was there. At capacity, a new key first drops
    /// the expired entries, then the oldest stored one (a scan of the map: the capacity is
    /// sized for every tenant and metric, so it is reached only when configured below that).
    pub fn put(&self, key: ScoreKey, entry: Arc<Entry>) {
        let mut entries = self.entries.write();
        if !entries.contains_key(&key) && entries.len() >= self.max_entries {
            let now = Instant::now();
            entries.retain(|_, entry| self.live(entry, now));
            if entries.len() >= self.max_entries {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.stored_at)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, entry);
    }
}

#[async_trait::async_trait]
impl ScoreStore for LocalStore {
    async fn get(&self, key: &ScoreKey) -> Option<Arc<Entry>> {
        self.read(key, Instant::now())
    }

    fn get_now(&self, key: &ScoreKey, now: Instant) -> Option<Arc<Entry>> {
        self.read(key, now)
    }

    async fn insert(&self, key: ScoreKey, entry: Arc<Entry>, _entra_tenant: &str) {
        self.put(key, entry);
    }

    async fn remove(&self, key: &ScoreKey) {
        self.entries.write().remove(key);
    }

    async fn retain(&self, registry: &Registry) {
        let now = Instant::now();
        self.entries.write().retain(|key, entry| {
            self.live(entry, now)
                && registry
                    .get(key.tenant.as_str())
                    .is_some_and(|tenant| tenant.has(key.metric))
        });
    }
}
