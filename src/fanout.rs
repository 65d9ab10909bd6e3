//! The many-tenant answer of `GET /scores`, without HTTP: which tenants match, fetching them all
//! concurrently within one deadline, the per-item status, the summary, the order and the paging.
//!
//! Owns the query semantics (filters, `sort`, `limit`, the opaque `cursor`, `timeout_ms`) and the
//! statistics. It does not decide whether Defender is called (that is [`crate::cache`]), nor how
//! many calls run at once (that is the in-flight cap of [`crate::quota`]), nor how an answer is
//! rendered as JSON or CSV (that is `api::scores`).

use crate::cache::{ScoreCache, ScoreError, Served, Source};
pub use crate::cursor::CursorCodec;
use crate::history::{History, HistoryError, Past};
use crate::tenants::{Registry, Tenant};
use crate::upstream::Metric;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use utoipa::ToSchema;

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
/// How long, at most, the changes from the history may take once every score is in (never past
/// the query's deadline): a slow or unreachable database delays `/scores` by no more.
const CHANGES_GRACE: Duration = Duration::from_millis(500);

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
    /// A cursor that this gateway did not issue for this query and this caller.
    #[error("the cursor is invalid, or belongs to another query or another API key")]
    Cursor,
}

/// The order of items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
// The schema keeps the name it was first published under.
#[schema(as = SortView)]
pub enum SortOrder {
    /// By tenant id.
    #[default]
    #[serde(rename = "tenant")]
    Tenant,
    /// By display name, then id.
    #[serde(rename = "name")]
    Name,
    /// By score, lowest first; items without a score last, ties by id.
    #[serde(rename = "score")]
    Score,
    /// By score, highest first; items without a score last, ties by id.
    #[serde(rename = "-score")]
    ScoreDesc,
    /// By `change_1d`, the biggest drop first; items without a change last, ties by id.
    #[serde(rename = "change_1d")]
    Change1d,
    /// By `change_1d`, the biggest gain first.
    #[serde(rename = "-change_1d")]
    Change1dDesc,
    /// By `change_7d`, the biggest drop first; items without a change last, ties by id.
    #[serde(rename = "change_7d")]
    Change7d,
    /// By `change_7d`, the biggest gain first.
    #[serde(rename = "-change_7d")]
    Change7dDesc,
    /// By `change_30d`, the biggest drop first; items without a change last, ties by id.
    #[serde(rename = "change_30d")]
    Change30d,
    /// By `change_30d`, the biggest gain first.
    #[serde(rename = "-change_30d")]
    Change30dDesc,
    /// By `change_90d`, the biggest drop first; items without a change last, ties by id.
    #[serde(rename = "change_90d")]
    Change90d,
    /// By `change_90d`, the biggest gain first.
    #[serde(rename = "-change_90d")]
    Change90dDesc,
}

impl SortOrder {
    /// For an order by change: how many days back, and whether descending (biggest gain first).
    fn change(self) -> Option<(u32, bool)> {
        match self {
            Self::Change1d => Some((1, false)),
            Self::Change1dDesc => Some((1, true)),
            Self::Change7d => Some((7, false)),
            Self::Change7dDesc => Some((7, true)),
            Self::Change30d => Some((30, false)),
            Self::Change30dDesc => Some((30, true)),
            Self::Change90d => Some((90, false)),
            Self::Change90dDesc => Some((90, true)),
            Self::Tenant | Self::Name | Self::Score | Self::ScoreDesc => None,
        }
    }
}

/// A `/scores` query as the caller wrote it (numbers signed, so that bad values get a clear 400).
#[derive(Debug, Clone, Default)]
pub struct RawQuery {
    /// The metric (default `device`).
    pub metric: Option<Metric>,
    /// Tenant ids to include (empty: all).
    pub tenants: Vec<String>,
    /// Tags, any of which includes a tenant (empty: all).
    pub tags: Vec<String>,
    /// Status to keep.
    pub status: Option<ItemStatus>,
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

/// A validated `/scores` query, bound to the caller who asked it (for its cursors).
#[derive(Debug, Clone)]
pub struct Query {
    /// The metric every item reports.
    pub metric: Metric,
    /// Tenant ids to include (empty: all).
    pub tenants: Vec<String>,
    /// Tags, any of which includes a tenant (empty: all).
    pub tags: Vec<String>,
    /// Status to keep.
    pub status: Option<ItemStatus>,
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
    /// Seals the next page's cursor.
    cursors: Arc<CursorCodec>,
    /// Who asked (the API key's name and scope, canonical): a cursor only works for them.
    caller: String,
}

impl Query {
    /// Validates a raw query; the cursor must have been issued by `cursors` for the same
    /// filters and order and the same `caller` (a canonical text of the API key's name and scope).
    pub fn parse(
        raw: RawQuery,
        cursors: Arc<CursorCodec>,
        caller: &str,
    ) -> Result<Self, QueryError> {
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
            metric: raw.metric.unwrap_or(Metric::Device),
            tenants: raw.tenants,
            tags: raw.tags,
            status: raw.status,
            sort: raw.sort.unwrap_or_default(),
            limit: usize::try_from(limit).map_err(|_| QueryError::Limit(limit))?,
            after: None,
            max_age,
            timeout: Duration::from_millis(timeout_ms.unsigned_abs()),
            cursors,
            caller: caller.to_owned(),
        };
        if let Some(cursor) = &raw.cursor {
            query.after = Some(
                query
                    .cursors
                    .decode(cursor, &query.fingerprint())
                    .ok_or(QueryError::Cursor)?,
            );
        }
        Ok(query)
    }

    /// A digest of what selects and orders the items, and of who asked: a cursor is only valid
    /// for the same query of the same caller.
    fn fingerprint(&self) -> String {
        let mut tenants = self.tenants.clone();
        tenants.sort();
        tenants.dedup();
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        CursorCodec::binding(&serde_json::json!([
            tenants,
            tags,
            self.status,
            self.sort,
            self.caller,
            self.metric
        ]))
    }

    fn selects(&self, tenant: &Tenant) -> bool {
        (self.tenants.is_empty() || self.tenants.iter().any(|id| id == tenant.id.as_str()))
            && (self.tags.is_empty() || tenant.tags.iter().any(|tag| self.tags.contains(tag)))
    }
}

/// The status of one item; also the `status` filter of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
// The schema keeps the name it was first published under.
#[schema(as = ItemStatusView)]
pub enum ItemStatus {
    /// A score within the fresh window.
    Ok,
    /// A score older than the fresh window (a refresh runs, or it failed: see `warning`).
    Stale,
    /// No score: see `error`.
    Error,
}

/// One tenant's outcome.
#[derive(Debug, Clone)]
pub struct Item {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// The metric asked for.
    pub metric: Metric,
    /// Its score, or why there is none.
    pub outcome: Result<Served, ScoreError>,
    /// Its scores at the ends of past days, from the history (all `None` when the history is
    /// off, unreachable or too slow for the request's deadline).
    pub past: Past,
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

    /// The score now minus the score at the end of the day `days` (1, 7, 30 or 90) ago; `None`
    /// without either. Rounded like derived statistics (no float noise).
    pub fn change(&self, days: u32) -> Option<f64> {
        let then = match days {
            1 => self.past.ago_1d,
            7 => self.past.ago_7d,
            30 => self.past.ago_30d,
            90 => self.past.ago_90d,
            _ => None,
        }?;
        Some(round_derived(self.score()? - then))
    }

    /// Where the item stands in `sort`'s order, borrowed from it (sorting copies nothing).
    fn key(&self, sort: SortOrder) -> SortKeyRef<'_> {
        let id = self.tenant.id.as_str();
        let (errors_last, text, number) = if let Some((days, descending)) = sort.change() {
            let change = self.change(days);
            let number = change.unwrap_or(0.0);
            (
                change.is_none(),
                "",
                if descending { -number } else { number },
            )
        } else {
            match sort {
                SortOrder::Tenant => (false, "", 0.0),
                SortOrder::Name => (false, self.tenant.name.as_str(), 0.0),
                _ => {
                    let score = self.score();
                    let number = score.unwrap_or(0.0);
                    let number = if sort == SortOrder::ScoreDesc {
                        -number
                    } else {
                        number
                    };
                    (score.is_none(), "", number)
                }
            }
        };
        SortKeyRef {
            errors_last,
            text,
            number,
            id,
        }
    }
}

/// Where an item stands in the order: compared field by field, the id last, so that no two items
/// share a key and paging "after the last key" neither skips nor repeats an item. This owned
/// form is what a cursor carries.
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
    fn as_ref(&self) -> SortKeyRef<'_> {
        SortKeyRef {
            errors_last: self.errors_last,
            text: &self.text,
            number: self.number,
            id: &self.id,
        }
    }

    #[cfg(test)]
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_ref().cmp(&other.as_ref())
    }
}

/// A [`SortKey`] borrowed from an item: sorting thousands of items compares these, without
/// copying an id or a name per item.
#[derive(Debug, Clone, Copy)]
struct SortKeyRef<'a> {
    errors_last: bool,
    text: &'a str,
    number: f64,
    id: &'a str,
}

impl SortKeyRef<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.errors_last
            .cmp(&other.errors_last)
            .then_with(|| self.text.cmp(other.text))
            .then_with(|| self.number.total_cmp(&other.number))
            .then_with(|| self.id.cmp(other.id))
    }

    fn to_owned(self) -> SortKey {
        SortKey {
            errors_last: self.errors_last,
            text: self.text.to_owned(),
            number: self.number,
            id: self.id.to_owned(),
        }
    }
}

/// Counts and statistics over every matching tenant; statistics use `ok` and `stale` items and
/// are `null` when there are none.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
// The schema keeps the name it was first published under.
#[schema(as = SummaryView)]
pub struct Summary {
    /// Matching tenants.
    pub tenants: usize,
    /// Tenants with a fresh score.
    pub ok: usize,
    /// Tenants with a stale score.
    pub stale: usize,
    /// Tenants without a score.
    pub failed: usize,
    /// Lowest score.
    pub min: Option<f64>,
    /// Highest score.
    pub max: Option<f64>,
    /// Mean score.
    pub mean: Option<f64>,
    /// Median score (the mean of the two middle scores for an even count).
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
///
/// The changes (`change_Nd`) come from `history` in one query over the matching tenants, run
/// beside the fan-out and bounded by the same deadline: a history that is off, away or slow
/// leaves them `null` and delays nothing further.
pub async fn scores(
    cache: &ScoreCache,
    history: Option<&History>,
    registry: &Registry,
    visible: impl Fn(&Tenant) -> bool,
    query: &Query,
) -> Page {
    let wait_until = crate::quota::instant_after(Instant::now(), query.timeout);
    let max_age = query.max_age;
    let metric = query.metric;
    let selected: Vec<Arc<Tenant>> = registry
        .all()
        .iter()
        .filter(|tenant| visible(tenant) && query.selects(tenant))
        .cloned()
        .collect();
    let ids: Vec<String> = selected
        .iter()
        .map(|tenant| tenant.id.to_string())
        .collect();
    let past = past_scores(history, ids, metric, wait_until);
    // Fresh scores the cache can give at once need no future each: on a warm `/scores` that
    // is every tenant, and a future per tenant (built, moved, polled) was most of its time.
    let mut ready = Vec::with_capacity(selected.len());
    let mut waiting = Vec::new();
    for tenant in selected {
        match cache.get_fresh_now(&tenant, metric, max_age) {
            Some(served) => ready.push(Item {
                tenant,
                metric,
                outcome: Ok(served),
                past: Past::default(),
            }),
            None => waiting.push(tenant),
        }
    }
    ready.retain(|item| query.status.is_none_or(|status| item.status() == status));
    let fan_out = futures::stream::iter(waiting)
        .map(|tenant| async move {
            let outcome = if Instant::now() >= wait_until {
                Err(ScoreError::Deadline)
            } else {
                // `get` itself may wait (the single-flight lock, the cache): bound that too.
                // Cancelling it is safe: a fetch is started and registered without an await
                // between, and a started fetch goes on by itself.
                tokio::time::timeout_at(wait_until, cache.get(&tenant, metric, max_age, wait_until))
                    .await
                    .unwrap_or(Err(ScoreError::Deadline))
            };
            Item {
                tenant,
                metric,
                outcome,
                past: Past::default(),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|item| {
            let keep = query.status.is_none_or(|status| item.status() == status);
            futures::future::ready(keep)
        })
        .collect::<Vec<Item>>();
    // The scores decide when the answer is ready; the changes get a short grace after them.
    let mut fan_out = std::pin::pin!(fan_out);
    let mut past = std::pin::pin!(past);
    let mut found = None;
    let mut items = loop {
        tokio::select! {
            items = &mut fan_out => break items,
            result = &mut past, if found.is_none() => found = Some(result),
        }
    };
    let mut past = match found {
        Some(past) => past,
        None => tokio::time::timeout(CHANGES_GRACE, past)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("history: changes not ready in time, served as null");
                HashMap::new()
            }),
    };
    items.append(&mut ready);
    for item in &mut items {
        if let Some(found) = past.remove(item.tenant.id.as_str()) {
            item.past = found;
        }
    }
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

/// The matching tenants' scores at the ends of past days, in one query, given up at
/// `wait_until`; empty when the history is off, not connected, failing or too slow.
async fn past_scores(
    history: Option<&History>,
    tenants: Vec<String>,
    metric: Metric,
    wait_until: Instant,
) -> HashMap<String, Past> {
    let Some(history) = history else {
        return HashMap::new();
    };
    let now = time::OffsetDateTime::now_utc();
    match tokio::time::timeout_at(wait_until, history.changes(&tenants, metric, now)).await {
        Ok(Err(HistoryError::NotConnected)) => HashMap::new(),
        Ok(Ok(past)) => past,
        Ok(Err(error)) => {
            tracing::warn!(
                "history: changes not available, served as null: {}",
                crate::telemetry::error_chain(&error)
            );
            HashMap::new()
        }
        Err(_) => {
            tracing::warn!(
                "history: changes not ready within the request's deadline, served as null"
            );
            HashMap::new()
        }
    }
}

/// Sorts the items and cuts out the page after `query.after`; returns it and the next cursor.
///
/// Only the page is sorted: the `limit` first items are selected (linear time) and sorted,
/// so a first page of 1,000 out of 10,000 tenants does not sort the other 9,000.
fn paginate(items: &mut Vec<Item>, query: &Query) -> (Vec<Item>, Option<String>) {
    let sort = query.sort;
    if let Some(after) = &query.after {
        let after = after.as_ref();
        items.retain(|item| item.key(sort).cmp(&after) == Ordering::Greater);
    }
    let order = |a: &Item, b: &Item| a.key(sort).cmp(&b.key(sort));
    let more = items.len() > query.limit;
    if more {
        items.select_nth_unstable_by(query.limit, order);
        items.truncate(query.limit);
    }
    // Keys are unique (the id breaks ties), so an unstable sort gives the one order.
    items.sort_unstable_by(order);
    let next = if more {
        items.last().map(|item| {
            query
                .cursors
                .encode(&item.key(sort).to_owned(), &query.fingerprint())
        })
    } else {
        None
    };
    (std::mem::take(items), next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

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

    fn codec() -> Arc<CursorCodec> {
        static CODEC: std::sync::OnceLock<Arc<CursorCodec>> = std::sync::OnceLock::new();
        CODEC
            .get_or_init(|| Arc::new(CursorCodec::random()))
            .clone()
    }

    fn parse(raw: RawQuery) -> Result<Query, QueryError> {
        Query::parse(raw, codec(), "portal")
    }

    #[test]
    fn a_cursor_round_trips_for_the_same_query_and_caller() {
        let query = parse(raw()).unwrap();
        let cursor = codec().encode(&key(false, 12.5, "contoso"), &query.fingerprint());
        let parsed = parse(RawQuery {
            cursor: Some(cursor),
            ..raw()
        })
        .unwrap();
        assert_eq!(parsed.after, Some(key(false, 12.5, "contoso")));
    }

    #[test]
    fn a_cursor_is_opaque_and_differs_each_time() {
        let query = parse(raw()).unwrap();
        let sort_key = SortKey {
            errors_last: false,
            text: "Contoso Ltd".to_owned(),
            number: 340.0,
            id: "contoso".to_owned(),
        };
        let first = codec().encode(&sort_key, &query.fingerprint());
        let second = codec().encode(&sort_key, &query.fingerprint());
        assert_ne!(first, second, "a fresh nonce per cursor");
        for cursor in [&first, &second] {
            let bytes = URL_SAFE_NO_PAD.decode(cursor).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for secret in ["contoso", "Contoso", "340", "\"i\""] {
                assert!(!text.contains(secret), "{secret} readable in {cursor}");
            }
        }
    }

    #[test]
    fn a_tampered_or_foreign_cursor_is_refused() {
        let query = parse(raw()).unwrap();
        let cursor = codec().encode(&key(false, 1.0, "contoso"), &query.fingerprint());
        let mut flipped = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut forged_body = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        forged_body[aead::NONCE_LEN] ^= 1;
        for bad in [
            URL_SAFE_NO_PAD.encode(flipped),
            URL_SAFE_NO_PAD.encode(forged_body),
            cursor[..cursor.len() - 4].to_owned(),
            format!("{cursor}.AAAA"),
            "garbage".to_owned(),
            String::new(),
        ] {
            let result = parse(RawQuery {
                cursor: Some(bad.clone()),
                ..raw()
            });
            assert_eq!(result.unwrap_err(), QueryError::Cursor, "{bad}");
        }
        // The same cursor with other filters belongs to another query.
        let result = parse(RawQuery {
            cursor: Some(cursor.clone()),
            tags: vec!["gold".to_owned()],
            ..raw()
        });
        assert_eq!(result.unwrap_err(), QueryError::Cursor);
        // The same query by another caller.
        let result = Query::parse(
            RawQuery {
                cursor: Some(cursor.clone()),
                ..raw()
            },
            codec(),
            "other-key",
        );
        assert_eq!(result.unwrap_err(), QueryError::Cursor);
        // Another process's random key.
        let result = Query::parse(
            RawQuery {
                cursor: Some(cursor),
                ..raw()
            },
            Arc::new(CursorCodec::random()),
            "portal",
        );
        assert_eq!(result.unwrap_err(), QueryError::Cursor);
    }

    #[test]
    fn replicas_sharing_a_configured_key_open_each_others_cursors() {
        let one = Arc::new(CursorCodec::from_secret(b"a shared secret of some length"));
        let two = Arc::new(CursorCodec::from_secret(b"a shared secret of some length"));
        let other = Arc::new(CursorCodec::from_secret(b"another secret entirely, not it"));
        let query = Query::parse(raw(), one.clone(), "portal").unwrap();
        let cursor = one.encode(&key(false, 2.0, "fabrikam"), &query.fingerprint());
        let on_two = Query::parse(
            RawQuery {
                cursor: Some(cursor.clone()),
                ..raw()
            },
            two,
            "portal",
        )
        .unwrap();
        assert_eq!(on_two.after, Some(key(false, 2.0, "fabrikam")));
        let on_other = Query::parse(
            RawQuery {
                cursor: Some(cursor),
                ..raw()
            },
            other,
            "portal",
        );
        assert_eq!(on_other.unwrap_err(), QueryError::Cursor);
        assert_eq!(format!("{one:?}"), "CursorCodec");
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
            assert_eq!(parse(query).unwrap_err(), error);
        }
        let defaults = parse(raw()).unwrap();
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
