//! The many-tenant answer of `GET /scores`, without HTTP: which tenants match, fetching them all
//! concurrently within one deadline, the per-item status, the summary, the order and the paging.
//!
//! Owns the query semantics (filters, `sort`, `limit`, the opaque `cursor`, `timeout_ms`) and the
//! statistics. It does not decide whether Defender is called (that is [`crate::cache`]), nor how
//! many calls run at once (that is the in-flight cap of [`crate::quota`]), nor how an answer is
//! rendered as JSON or CSV (that is `api::scores`).

use crate::cache::{ScoreCache, ScoreError, Served, Source};
use crate::tenants::{Registry, Tenant};
use aws_lc_rs::{digest, hmac, rand as lc_rand};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page.
pub const MAX_LIMIT: i64 = 1000;
/// Default wait for the slowest tenant, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: i64 = 5000;
/// Longest wait a caller may ask for, in milliseconds.
pub const MAX_TIMEOUT_MS: i64 = 60_000;
/// How many tenants are asked of the cache at once. Cache hits are cheap; cold tenants wait on
/// the global in-flight cap anyway, so this only bounds the number of pending futures.
const CONCURRENCY: usize = 1024;

/// Why a `/scores` query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `limit` outside `1..=1000`.
    #[error("limit must be between 1 and {MAX_LIMIT}, not {0}")]
    Limit(i64),
    /// `timeout_ms` outside `1..=60000`.
    #[error("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, not {0}")]
    Timeout(i64),
    /// A negative `max_age`.
    #[error("max_age must be 0 or more seconds, not {0}")]
    MaxAge(i64),
    /// A cursor that this gateway did not issue for this query.
    #[error("the cursor is invalid, or belongs to another query")]
    Cursor,
}

/// Which items to keep by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Fresh scores (fetched now or from the fresh cache).
    Ok,
    /// Scores older than the fresh window.
    Stale,
    /// No score.
    Error,
}

/// The order of items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SortOrder {
    /// By tenant id.
    #[default]
    #[serde(rename = "tenant")]
    Tenant,
    /// By display name, then id.
    #[serde(rename = "name")]
    Name,
    /// By score ascending, errors last, ties by id.
    #[serde(rename = "score")]
    Score,
    /// By score descending, errors last, ties by id.
    #[serde(rename = "-score")]
    ScoreDesc,
}

/// A `/scores` query as the caller wrote it (numbers signed, so that bad values get a clear 400).
#[derive(Debug, Clone, Default)]
pub struct RawQuery {
    /// Tenant ids to include (empty: all).
    pub tenants: Vec<String>,
    /// Tags, any of which includes a tenant (empty: all).
    pub tags: Vec<String>,
    /// Status to keep.
    pub status: Option<StatusFilter>,
    /// Order.
    pub sort: Option<SortOrder>,
    /// Page size.
    pub limit: Option<i64>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// Oldest acceptable score, in seconds.
    pub max_age: Option<i64>,
    /// How long to wait for slow tenants, in milliseconds.
    pub timeout_ms: Option<i64>,
}

/// A validated `/scores` query.
#[derive(Debug, Clone)]
pub struct Query {
    /// Tenant ids to include (empty: all).
    pub tenants: Vec<String>,
    /// Tags, any of which includes a tenant (empty: all).
    pub tags: Vec<String>,
    /// Status to keep.
    pub status: Option<StatusFilter>,
    /// Order.
    pub sort: SortOrder,
    /// Page size.
    pub limit: usize,
    /// Items start strictly after this key.
    pub after: Option<SortKey>,
    /// Oldest acceptable score.
    pub max_age: Option<Duration>,
    /// How long to wait for slow tenants.
    pub timeout: Duration,
}

impl Query {
    /// Validates a raw query; the cursor must have been issued for the same filters and order.
    pub fn parse(raw: RawQuery) -> Result<Self, QueryError> {
        let limit = raw.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError::Limit(limit));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(QueryError::Timeout(timeout_ms));
        }
        let max_age = match raw.max_age {
            Some(seconds) if seconds < 0 => return Err(QueryError::MaxAge(seconds)),
            Some(seconds) => Some(Duration::from_secs(seconds.unsigned_abs())),
            None => None,
        };
        let mut query = Self {
            tenants: raw.tenants,
            tags: raw.tags,
            status: raw.status,
            sort: raw.sort.unwrap_or_default(),
            limit: usize::try_from(limit).map_err(|_| QueryError::Limit(limit))?,
            after: None,
            max_age,
            timeout: Duration::from_millis(timeout_ms.unsigned_abs()),
        };
        if let Some(cursor) = &raw.cursor {
            query.after = Some(cursors().decode(cursor, &query.fingerprint())?);
        }
        Ok(query)
    }

    /// A digest of what selects and orders the items: a cursor is only valid for the same one.
    fn fingerprint(&self) -> String {
        let mut tenants = self.tenants.clone();
        tenants.sort();
        tenants.dedup();
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        let canonical = serde_json::json!([tenants, tags, self.status, self.sort]).to_string();
        URL_SAFE_NO_PAD
            .encode(&digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref()[..16])
    }

    fn selects(&self, tenant: &Tenant) -> bool {
        (self.tenants.is_empty() || self.tenants.iter().any(|id| id == tenant.id.as_str()))
            && (self.tags.is_empty() || tenant.tags.iter().any(|tag| self.tags.contains(tag)))
    }
}

/// The status of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemStatus {
    /// A fresh score.
    Ok,
    /// A score older than the fresh window.
    Stale,
    /// No score.
    Error,
}

/// One tenant's outcome.
#[derive(Debug, Clone)]
pub struct Item {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// Its score, or why there is none.
    pub outcome: Result<Served, ScoreError>,
}

impl Item {
    /// `ok`, `stale` or `error`.
    pub fn status(&self) -> ItemStatus {
        match &self.outcome {
            Ok(served) if served.source == Source::Stale => ItemStatus::Stale,
            Ok(_) => ItemStatus::Ok,
            Err(_) => ItemStatus::Error,
        }
    }

    /// The score, when there is one.
    pub fn score(&self) -> Option<f64> {
        self.outcome
            .as_ref()
            .ok()
            .map(|served| served.reading.score)
    }

    fn key(&self, sort: SortOrder) -> SortKey {
        let id = self.tenant.id.to_string();
        match sort {
            SortOrder::Tenant => SortKey {
                errors_last: false,
                text: String::new(),
                number: 0.0,
                id,
            },
            SortOrder::Name => SortKey {
                errors_last: false,
                text: self.tenant.name.clone(),
                number: 0.0,
                id,
            },
            SortOrder::Score | SortOrder::ScoreDesc => {
                let score = self.score();
                let number = score.unwrap_or(0.0);
                SortKey {
                    errors_last: score.is_none(),
                    text: String::new(),
                    number: if sort == SortOrder::ScoreDesc {
                        -number
                    } else {
                        number
                    },
                    id,
                }
            }
        }
    }
}

/// Where an item stands in the order: compared field by field, the id last, so that no two items
/// share a key and paging "after the last key" neither skips nor repeats an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    #[serde(rename = "e")]
    errors_last: bool,
    #[serde(rename = "t")]
    text: String,
    #[serde(rename = "n")]
    number: f64,
    #[serde(rename = "i")]
    id: String,
}

impl SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.errors_last
            .cmp(&other.errors_last)
            .then_with(|| self.text.cmp(&other.text))
            .then_with(|| self.number.total_cmp(&other.number))
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// Counts and statistics over every matching tenant (not just the page).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Matching tenants.
    pub tenants: usize,
    /// Items with a fresh score.
    pub ok: usize,
    /// Items with a stale score.
    pub stale: usize,
    /// Items without a score.
    pub failed: usize,
    /// Lowest score of `ok` and `stale` items.
    pub min: Option<f64>,
    /// Highest score.
    pub max: Option<f64>,
    /// Arithmetic mean.
    pub mean: Option<f64>,
    /// Median (the mean of the two middle scores for an even count).
    pub median: Option<f64>,
}

impl Summary {
    /// Summarises items.
    pub fn of(items: &[Item]) -> Self {
        let count = |status| items.iter().filter(|item| item.status() == status).count();
        let scores: Vec<f64> = items.iter().filter_map(Item::score).collect();
        let Statistics {
            min,
            max,
            mean,
            median,
        } = Statistics::of(scores);
        Self {
            tenants: items.len(),
            ok: count(ItemStatus::Ok),
            stale: count(ItemStatus::Stale),
            failed: count(ItemStatus::Error),
            min,
            max,
            mean,
            median,
        }
    }
}

/// Min, max, mean and median of some scores; `None` each when there are none.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Statistics {
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    median: Option<f64>,
}

impl Statistics {
    fn of(mut scores: Vec<f64>) -> Self {
        scores.sort_by(f64::total_cmp);
        let n = scores.len();
        let median = match n {
            0 => None,
            _ if n % 2 == 1 => Some(scores[n / 2]),
            _ => Some(round_derived((scores[n / 2 - 1] + scores[n / 2]) / 2.0)),
        };
        Self {
            min: scores.first().copied(),
            max: scores.last().copied(),
            mean: (n > 0).then(|| round_derived(scores.iter().sum::<f64>() / n as f64)),
            median,
        }
    }
}

/// Rounds a computed statistic to 6 decimal places, so that float noise (`545.4348000000001`)
/// does not reach callers; scores themselves are passed on exactly as Defender sent them.
fn round_derived(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// One page of the answer.
#[derive(Debug, Clone)]
pub struct Page {
    /// When the answer was put together.
    pub generated_at: SystemTime,
    /// Whether every matching item is `ok`.
    pub complete: bool,
    /// Over every matching tenant.
    pub summary: Summary,
    /// This page's items, in order.
    pub items: Vec<Item>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
}

/// Answers a query over the tenants the caller may see (`visible`): every matching tenant is
/// asked of the cache at once, and none is waited for past `query.timeout` (those are
/// `deadline_exceeded` items; their fetches go on and fill the cache).
///
/// The deadline bounds the whole fan-out, starting it included: with tens of thousands of cold
/// tenants, merely asking the cache for each (and starting their fetches) takes seconds. A
/// tenant not yet asked for when the deadline passes is not asked at all: it is a
/// `deadline_exceeded` item, and no fetch is started for it (the refresher or a later request
/// will).
pub async fn scores(
    cache: &ScoreCache,
    registry: &Registry,
    visible: impl Fn(&Tenant) -> bool,
    query: &Query,
) -> Page {
    let wait_until = crate::quota::instant_after(Instant::now(), query.timeout);
    let max_age = query.max_age;
    let selected: Vec<Arc<Tenant>> = registry
        .all()
        .iter()
        .filter(|tenant| visible(tenant) && query.selects(tenant))
        .cloned()
        .collect();
    let mut items: Vec<Item> = futures::stream::iter(selected)
        .map(|tenant| async move {
            let outcome = if Instant::now() >= wait_until {
                Err(ScoreError::Deadline)
            } else {
                // `get` itself may wait (the single-flight lock, the cache): bound that too.
                // Cancelling it is safe: a fetch is started and registered without an await
                // between, and a started fetch goes on by itself.
                tokio::time::timeout_at(wait_until, cache.get(&tenant, max_age, wait_until))
                    .await
                    .unwrap_or(Err(ScoreError::Deadline))
            };
            Item { tenant, outcome }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|item| {
            let keep = match query.status {
                None => true,
                Some(StatusFilter::Ok) => item.status() == ItemStatus::Ok,
                Some(StatusFilter::Stale) => item.status() == ItemStatus::Stale,
                Some(StatusFilter::Error) => item.status() == ItemStatus::Error,
            };
            futures::future::ready(keep)
        })
        .collect()
        .await;
    let summary = Summary::of(&items);
    let page = paginate(&mut items, query);
    Page {
        generated_at: SystemTime::now(),
        complete: summary.stale == 0 && summary.failed == 0,
        summary,
        next_cursor: page.1,
        items: page.0,
    }
}

/// Sorts the items and cuts out the page after `query.after`; returns it and the next cursor.
fn paginate(items: &mut Vec<Item>, query: &Query) -> (Vec<Item>, Option<String>) {
    let mut keyed: Vec<(SortKey, Item)> = items
        .drain(..)
        .map(|item| (item.key(query.sort), item))
        .filter(|(key, _)| {
            query
                .after
                .as_ref()
                .is_none_or(|after| key.cmp(after) == Ordering::Greater)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let more = keyed.len() > query.limit;
    keyed.truncate(query.limit);
    let next = if more {
        keyed
            .last()
            .map(|(key, _)| cursors().encode(key, &query.fingerprint()))
    } else {
        None
    };
    (keyed.into_iter().map(|(_, item)| item).collect(), next)
}

/// What a cursor carries: the last key of the page and the query it belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct CursorPayload {
    #[serde(rename = "k")]
    key: SortKey,
    #[serde(rename = "q")]
    fingerprint: String,
}

/// Signs and checks cursors. The key is random per process: cursors do not survive a restart,
/// and nobody can forge or edit one.
struct CursorCodec {
    key: hmac::Key,
}

impl CursorCodec {
    fn new() -> Self {
        let rng = lc_rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // No system randomness: fall back to a key from the thread RNG rather than fail.
            let bytes: [u8; 32] = rand::random();
            hmac::Key::new(hmac::HMAC_SHA256, &bytes)
        });
        Self { key }
    }

    /// `base64url(json).base64url(hmac)`.
    fn encode(&self, key: &SortKey, fingerprint: &str) -> String {
        let payload = CursorPayload {
            key: key.clone(),
            fingerprint: fingerprint.to_owned(),
        };
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn decode(&self, cursor: &str, fingerprint: &str) -> Result<SortKey, QueryError> {
        let (body, tag) = cursor.split_once('.').ok_or(QueryError::Cursor)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| QueryError::Cursor)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| QueryError::Cursor)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| QueryError::Cursor)?;
        let payload: CursorPayload =
            serde_json::from_slice(&json).map_err(|_| QueryError::Cursor)?;
        if payload.fingerprint != fingerprint {
            return Err(QueryError::Cursor);
        }
        Ok(payload.key)
    }
}

fn cursors() -> &'static CursorCodec {
    static CODEC: OnceLock<CursorCodec> = OnceLock::new();
    CODEC.get_or_init(CursorCodec::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(errors_last: bool, number: f64, id: &str) -> SortKey {
        SortKey {
            errors_last,
            text: String::new(),
            number,
            id: id.to_owned(),
        }
    }

    fn raw() -> RawQuery {
        RawQuery::default()
    }

    #[test]
    fn a_cursor_round_trips_for_the_same_query() {
        let query = Query::parse(raw()).unwrap();
        let cursor = cursors().encode(&key(false, 12.5, "contoso"), &query.fingerprint());
        let parsed = Query::parse(RawQuery {
            cursor: Some(cursor),
            ..raw()
        })
        .unwrap();
        assert_eq!(parsed.after, Some(key(false, 12.5, "contoso")));
    }

    #[test]
    fn a_tampered_or_foreign_cursor_is_refused() {
        let query = Query::parse(raw()).unwrap();
        let cursor = cursors().encode(&key(false, 1.0, "contoso"), &query.fingerprint());
        let (body, tag) = cursor.split_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&CursorPayload {
                key: key(false, 1.0, "zzz"),
                fingerprint: query.fingerprint(),
            })
            .unwrap(),
        );
        for bad in [
            format!("{forged_body}.{tag}"),
            format!("{body}.AAAA"),
            body.to_owned(),
            "garbage".to_owned(),
            String::new(),
        ] {
            let result = Query::parse(RawQuery {
                cursor: Some(bad.clone()),
                ..raw()
            });
            assert_eq!(result.unwrap_err(), QueryError::Cursor, "{bad}");
        }
        // The same cursor with other filters belongs to another query.
        let result = Query::parse(RawQuery {
            cursor: Some(cursor),
            tags: vec!["gold".to_owned()],
            ..raw()
        });
        assert_eq!(result.unwrap_err(), QueryError::Cursor);
    }

    #[test]
    fn bad_values_are_refused() {
        for (query, error) in [
            (
                RawQuery {
                    limit: Some(0),
                    ..raw()
                },
                QueryError::Limit(0),
            ),
            (
                RawQuery {
                    limit: Some(100_000),
                    ..raw()
                },
                QueryError::Limit(100_000),
            ),
            (
                RawQuery {
                    timeout_ms: Some(0),
                    ..raw()
                },
                QueryError::Timeout(0),
            ),
            (
                RawQuery {
                    max_age: Some(-1),
                    ..raw()
                },
                QueryError::MaxAge(-1),
            ),
        ] {
            assert_eq!(Query::parse(query).unwrap_err(), error);
        }
        let defaults = Query::parse(raw()).unwrap();
        assert_eq!(defaults.limit, 100);
        assert_eq!(defaults.timeout, Duration::from_secs(5));
        assert_eq!(defaults.sort, SortOrder::Tenant);
    }

    #[test]
    fn score_keys_put_errors_last_and_break_ties_by_id() {
        let mut keys = [
            key(true, 0.0, "a-error"),
            key(false, 300.0, "b"),
            key(false, 100.0, "c"),
            key(false, 300.0, "a"),
            key(true, 0.0, "0-error"),
        ];
        keys.sort_by(SortKey::cmp);
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b", "0-error", "a-error"]);
        // Descending scores are stored negated: the same comparison serves both orders.
        let mut keys = [
            key(false, -100.0, "c"),
            key(true, 0.0, "e"),
            key(false, -300.0, "b"),
            key(false, -300.0, "a"),
        ];
        keys.sort_by(SortKey::cmp);
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "e"]);
    }

    #[test]
    fn derived_statistics_carry_no_float_noise() {
        let statistics = Statistics::of(vec![545.43, 545.4396, 545.4348, 545.4348, 545.4348]);
        assert_eq!(statistics.mean, Some(545.4348));
        let statistics = Statistics::of(vec![0.1, 0.2]);
        assert_eq!(
            (statistics.mean, statistics.median),
            (Some(0.15), Some(0.15))
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        fn stats(scores: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
            let s = Statistics::of(scores.to_vec());
            (s.min, s.max, s.mean, s.median)
        }
        assert_eq!(
            stats(&[340.0, 300.0]),
            (Some(300.0), Some(340.0), Some(320.0), Some(320.0))
        );
        assert_eq!(
            stats(&[5.0, 1.0, 3.0]),
            (Some(1.0), Some(5.0), Some(3.0), Some(3.0))
        );
        assert_eq!(
            stats(&[4.0, 1.0, 2.0, 10.0]),
            (Some(1.0), Some(10.0), Some(4.25), Some(3.0))
        );
        assert_eq!(stats(&[]), (None, None, None, None));
    }
}
