//! Where good readings are kept: the cached [`Entry`], the [`ScoreStore`] seam (with [`Claim`]
//! for single flight across processes), and the in-process [`MokaStore`].

use super::ScoreKey;
use crate::tenants::Registry;
use crate::upstream::Reading;
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

/// Where good readings are kept: moka in process ([`MokaStore`]); a shared (Redis) second
/// level behind the same calls when several replicas serve the same tenants. The store only
/// keeps: freshness, single flight and stale-if-error are decided by [`ScoreCache`](super::ScoreCache).
#[async_trait::async_trait]
pub trait ScoreStore: Send + Sync {
    /// The entry under `key`, if any.
    async fn get(&self, key: &ScoreKey) -> Option<Arc<Entry>>;
    /// The entry under `key` when this process can tell without waiting (no I/O): a warm
    /// `/scores` answers its fresh tenants through this, without a future per tenant. `None`
    /// means "ask [`ScoreStore::get`]", which a store shared between processes always does.
    fn get_now(&self, _key: &ScoreKey) -> Option<Arc<Entry>> {
        None
    }
    /// Stores `entry` under `key`, replacing what was there.
    async fn insert(&self, key: ScoreKey, entry: Arc<Entry>);
    /// Drops the entries of tenants that left the registry, and of metrics a tenant no longer
    /// has.
    async fn retain(&self, registry: &Registry);
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

/// The in-process score store: bounded, and dropping entries too old even for stale-if-error.
pub struct MokaStore {
    /// moka's synchronous cache: a warm `/scores` reads every tenant's entry, and the async
    /// cache's `get` (a large future, moved and polled per read) was a third of its time
    /// (docs/performance.md). Nothing here waits on I/O, so nothing is lost by not awaiting.
    entries: moka::sync::Cache<ScoreKey, Arc<Entry>>,
}

impl MokaStore {
    /// At most `max_entries`, each kept for `time_to_live` (fresh plus stale-if-error).
    pub fn new(max_entries: u64, time_to_live: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(time_to_live)
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl ScoreStore for MokaStore {
    async fn get(&self, key: &ScoreKey) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    fn get_now(&self, key: &ScoreKey) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    async fn insert(&self, key: ScoreKey, entry: Arc<Entry>) {
        self.entries.insert(key, entry);
    }

    async fn retain(&self, registry: &Registry) {
        let gone: Vec<ScoreKey> = self
            .entries
            .iter()
            .map(|(key, _)| (*key).clone())
            .filter(|key| {
                !registry
                    .get(key.tenant.as_str())
                    .is_some_and(|tenant| tenant.has(key.metric))
            })
            .collect();
        for key in gone {
            self.entries.invalidate(&key);
        }
    }
}
