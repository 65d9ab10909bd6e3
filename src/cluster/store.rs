//! The score cache's Redis level and cluster-wide single flight, behind [`ScoreStore`].
//!
//! [`TieredStore`] keeps the in-process store in front: a look-up is answered from this replica's memory while
//! its copy was checked against Redis less than `[cluster] local_ttl_ms` ago; after that Redis is
//! asked whether another replica stored a newer reading. Redis holds each reading with its fetch
//! and store times (wall clock, milliseconds since the epoch) and its fresh window, for the fresh
//! plus stale-if-error windows: a replica that starts, or whose own copy expired, serves what
//! another fetched. Redis unavailable: the first level alone, for the whole window.
//!
//! Every shared key of a reading names the Entra tenant the tenant id stands for
//! ([`Cluster::reading_key`]): while the replicas' configurations disagree on it (one reloaded
//! after the id was re-pointed at another customer, one not yet), each serves and shares only
//! the readings of its own registration.
//!
//! Single flight across replicas: before fetching, a replica sets the flight key of the tenant
//! and metric with `SET NX PX` and a random token (held at most for the fetch's deadline). The
//! replica that gets it fetches, stores the reading in Redis, then deletes the key with a
//! compare-and-delete script (never another replica's later claim). The others poll Redis every
//! `[cluster] wait_poll_ms` for a reading stored since their flight began; when the key is gone
//! without one (the fetch failed), they claim it in turn, and the shared back-off decides
//! whether they may call at all.

use super::Cluster;
use crate::cache::{Claim, Entry, LocalStore, ScoreStore};
use crate::metrics::ClusterUse;
use crate::model::{Reading, ScoreKey, TenantId};
use crate::tenants::Registry;
use parking_lot::RwLock;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]` (a claim's token): a fetch that outlived
/// its claim never deletes the claim another replica made since.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// [`RELEASE`], loaded once.
pub static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// What [`STORED_VERSION`] a stored reading has: a replica of another version cannot read it
/// and treats it as absent (it fetches, or waits for a reading of its own version).
///
/// Version 2 stores the score body as the API writes it ([`Reading`]'s serde form, under
/// `reading`; `fetched_at` to the second) where version 1 spelled out its own copy of the
/// fields: replicas of either version see the other's readings as absent, never misread.
const STORED_VERSION: u8 = 2;

/// A reading as stored in Redis: the score body in a versioned envelope with its store time
/// (wall clock, milliseconds since the epoch) and its fresh window.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    v: u8,
    stored_at_ms: u64,
    fresh_for_ms: u64,
    reading: Reading,
}

fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

impl Stored {
    fn from_entry(entry: &Entry) -> Self {
        let stored_at = SystemTime::now()
            .checked_sub(entry.stored_at.elapsed())
            .unwrap_or(UNIX_EPOCH);
        Self {
            v: STORED_VERSION,
            stored_at_ms: millis_since_epoch(stored_at),
            fresh_for_ms: u64::try_from(entry.fresh_for.as_millis()).unwrap_or(u64::MAX),
            reading: entry.reading.clone(),
        }
    }

    /// The entry, its store time turned into this process's clock.
    fn into_entry(self) -> Entry {
        let stored_wall = UNIX_EPOCH + Duration::from_millis(self.stored_at_ms);
        let ago = SystemTime::now()
            .duration_since(stored_wall)
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        Entry::new(
            self.reading,
            now.checked_sub(ago).unwrap_or(now),
            Duration::from_millis(self.fresh_for_ms),
        )
    }
}

/// Whether `entry` (read from Redis) was stored at or after `since`.
fn stored_since(entry: &Entry, since: SystemTime) -> bool {
    let stored = SystemTime::now()
        .checked_sub(entry.stored_at.elapsed())
        .unwrap_or(UNIX_EPOCH);
    millis_since_epoch(stored) >= millis_since_epoch(since)
}

/// The Entra tenant each tenant id stands for, as this replica's registry says.
type EntraTenants = HashMap<TenantId, String, foldhash::fast::RandomState>;

fn entra_tenants(registry: &Registry) -> EntraTenants {
    registry
        .all()
        .iter()
        .map(|tenant| (tenant.id.clone(), tenant.tenant_id.clone()))
        .collect()
}

/// The in-process store in front of Redis, and the cluster's single flight.
pub struct TieredStore {
    cluster: Arc<Cluster>,
    /// What each tenant id stands for here: part of every Redis key of a reading.
    entra_tenants: RwLock<EntraTenants>,
    /// The first level: every entry this replica has, for the whole window.
    local: LocalStore,
    /// When each first-level entry was last compared with Redis.
    checked: moka::future::Cache<ScoreKey, Instant>,
    /// How long a reading is kept in Redis: fresh plus stale-if-error.
    time_to_live: Duration,
}

impl TieredStore {
    /// A store of at most `max_entries` readings of `registry`'s tenants, kept for
    /// `time_to_live` in both levels.
    pub fn new(
        cluster: Arc<Cluster>,
        registry: &Registry,
        max_entries: u64,
        time_to_live: Duration,
    ) -> Self {
        Self {
            entra_tenants: RwLock::new(entra_tenants(registry)),
            local: LocalStore::new(max_entries, time_to_live),
            checked: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(cluster.local_ttl().max(Duration::from_millis(1)))
                .build(),
            cluster,
            time_to_live,
        }
    }

    /// The Redis key of `kind` ("score", "flight") for `key`, under the Entra tenant the id
    /// stands for now (none for an id no longer registered: nothing is served for it).
    fn redis_key(&self, key: &ScoreKey, kind: &str) -> String {
        let entra_tenants = self.entra_tenants.read();
        let entra_tenant = entra_tenants.get(&key.tenant).map_or("", String::as_str);
        self.cluster.reading_key(key, kind, entra_tenant)
    }

    /// Whether `value_key`, made before a look at Redis, still names what `key` stands for: a
    /// reload that re-pointed the id meanwhile makes the reading found another customer's.
    fn still_current(&self, key: &ScoreKey, value_key: &str) -> bool {
        self.redis_key(key, "score") == value_key
    }

    /// The reading Redis holds under `key`; `Err` when Redis is unavailable.
    async fn shared(&self, key: &ScoreKey) -> Result<Option<Entry>, super::ClusterError> {
        let value_key = self.redis_key(key, "score");
        let asked = value_key.clone();
        let raw: Option<String> = self
            .cluster
            .run(|mut connection| async move {
                redis::cmd("GET")
                    .arg(asked)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(raw
            .filter(|_| self.still_current(key, &value_key))
            .and_then(|raw| serde_json::from_str::<Stored>(&raw).ok())
            .filter(|stored| stored.v == STORED_VERSION)
            .map(Stored::into_entry))
    }
}

#[async_trait::async_trait]
impl ScoreStore for TieredStore {
    async fn get(&self, key: &ScoreKey) -> Option<Arc<Entry>> {
        let local = self.local.get(key).await;
        if local.is_some() && self.checked.get(key).await.is_some() {
            return local;
        }
        match self.shared(key).await {
            Ok(Some(shared)) => {
                self.checked.insert(key.clone(), Instant::now()).await;
                if local
                    .as_ref()
                    .is_some_and(|local| local.stored_at >= shared.stored_at)
                {
                    return local;
                }
                let shared = Arc::new(shared);
                self.local.put(key.clone(), shared.clone());
                Some(shared)
            }
            Ok(None) => {
                self.checked.insert(key.clone(), Instant::now()).await;
                local
            }
            Err(_) => {
                if local.is_some() {
                    self.cluster.fell_back(ClusterUse::Cache);
                }
                local
            }
        }
    }

    async fn insert(&self, key: ScoreKey, entry: Arc<Entry>, entra_tenant: &str) {
        // Under the customer it was fetched from: a reload that re-pointed the id since then
        // must not file it under the new one (the cache undoes the first level's copy).
        let value_key = self.cluster.reading_key(&key, "score", entra_tenant);
        let value = serde_json::to_string(&Stored::from_entry(&entry));
        self.local.put(key.clone(), entry);
        self.checked.insert(key, Instant::now()).await;
        let Ok(value) = value else {
            return;
        };
        let millis = u64::try_from(self.time_to_live.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let stored = self
            .cluster
            .run(|mut connection| async move {
                redis::cmd("SET")
                    .arg(value_key)
                    .arg(value)
                    .arg("PX")
                    .arg(millis)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if stored.is_err() {
            self.cluster.fell_back(ClusterUse::Cache);
        }
    }

    async fn retain(&self, registry: &Registry) {
        // From now on this replica's keys name the Entra tenants of `registry`. Redis entries
        // of a departed tenant expire with their window; only memory is freed.
        *self.entra_tenants.write() = entra_tenants(registry);
        self.local.retain(registry).await;
    }

    async fn remove(&self, key: &ScoreKey) {
        // Only this replica's memory: in Redis the previous customer's reading is under a key
        // naming its Entra tenant, which this replica no longer asks for (a replica not yet
        // reloaded still serves it to its own, previous, registration).
        self.local.remove(key).await;
        self.checked.invalidate(key).await;
    }

    async fn claim(&self, key: &ScoreKey, since: SystemTime, hold: Duration) -> Claim {
        let (token, claimed) = self
            .cluster
            .take_token(self.redis_key(key, "flight"), hold)
            .await;
        match claimed {
            Ok(true) => {
                // Checked after winning, not before: a replica that stored and released just
                // before our claim did so before this look, so its reading is seen here.
                match self.shared(key).await {
                    Ok(Some(entry)) if stored_since(&entry, since) => {
                        self.release(key, token).await;
                        let entry = Arc::new(entry);
                        self.local.put(key.clone(), entry.clone());
                        self.checked.insert(key.clone(), Instant::now()).await;
                        Claim::Ready(entry)
                    }
                    _ => Claim::Fetch(Some(token)),
                }
            }
            Ok(false) => Claim::Wait,
            Err(_) => {
                self.cluster.fell_back(ClusterUse::Flight);
                Claim::Fetch(None)
            }
        }
    }

    async fn release(&self, key: &ScoreKey, token: String) {
        // A claim left behind expires with its hold: nothing more to do when this fails.
        self.cluster
            .give_back(self.redis_key(key, "flight"), token)
            .await;
    }

    async fn wait_for(
        &self,
        key: &ScoreKey,
        since: SystemTime,
        until: Instant,
    ) -> Option<Arc<Entry>> {
        let value_key = self.redis_key(key, "score");
        let flight_key = self.redis_key(key, "flight");
        let since_ms = millis_since_epoch(since);
        loop {
            let (asked_value, asked_flight) = (value_key.clone(), flight_key.clone());
            let polled = self
                .cluster
                .run(|mut connection| async move {
                    redis::cmd("MGET")
                        .arg(asked_value)
                        .arg(asked_flight)
                        .query_async::<(Option<String>, Option<String>)>(&mut connection)
                        .await
                })
                .await;
            let Ok((value, flight)) = polled else {
                self.cluster.fell_back(ClusterUse::Flight);
                return None;
            };
            if !self.still_current(key, &value_key) {
                // Re-pointed while waiting: what that flight fetches is another customer's.
                return None;
            }
            let fresh = value
                .and_then(|raw| serde_json::from_str::<Stored>(&raw).ok())
                .filter(|stored| stored.v == STORED_VERSION && stored.stored_at_ms >= since_ms);
            if let Some(stored) = fresh {
                let entry = Arc::new(stored.into_entry());
                self.local.put(key.clone(), entry.clone());
                self.checked.insert(key.clone(), Instant::now()).await;
                return Some(entry);
            }
            // The claim is gone without a reading: that fetch failed.
            flight.as_ref()?;
            let next = Instant::now() + self.cluster.wait_poll();
            if next >= until {
                return None;
            }
            tokio::time::sleep_until(next).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_stored_by_a_version_1_replica_is_not_read() {
        let v1 = r#"{"v":1,"score":340.0,"time":"t","fetched_at_ms":1,"stored_at_ms":2,
            "fresh_for_ms":3,"secure":null}"#;
        assert!(serde_json::from_str::<Stored>(v1).is_err());
    }

    #[test]
    fn a_stored_reading_keeps_its_body_and_its_window() {
        let entry = Entry::new(
            Reading {
                score: 340.0,
                time: "t".to_owned(),
                fetched_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                secure: None,
            },
            Instant::now(),
            Duration::from_millis(1_500),
        );
        let json = serde_json::to_string(&Stored::from_entry(&entry)).unwrap();
        let stored: Stored = serde_json::from_str(&json).unwrap();
        assert_eq!(stored.v, STORED_VERSION);
        let back = stored.into_entry();
        assert_eq!(back.reading, entry.reading);
        assert_eq!(back.fresh_for, entry.fresh_for);
    }
}
