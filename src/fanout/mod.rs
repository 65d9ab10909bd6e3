//! The many-tenant answer of `GET /scores`, without HTTP: which tenants match, fetching them all
//! concurrently within one deadline, the per-item status, the summary, the order and the paging.
//!
//! Owns the query semantics (filters, `sort`, `limit`, the opaque `cursor`, `timeout_ms`) and the
//! statistics. It does not decide whether Defender is called (that is [`crate::cache`]), nor how
//! many calls run at once (that is the in-flight cap of [`crate::quota`]), nor how an answer is
//! rendered as JSON or CSV (that is `api::scores`).

mod budget;
mod controls;
mod order;
mod summary;

pub use budget::{AnswerBudget, Reservation, ANSWER_BUDGET};
pub use controls::{controls, ControlsPage, ControlsQuery, FailedTenant, RawControlsQuery};

pub use order::{SortKey, SortOrder};
pub use summary::Summary;

use summary::round_derived;

use crate::cache::{ScoreCache, ScoreError, Served, Source};
pub use crate::cursor::CursorCodec;
use crate::history::{History, HistoryError, Past, PastScores};
use crate::tenants::{Registry, Tenant, TenantId};
use crate::upstream::Metric;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
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
        let (limit, timeout) = page_and_deadline(raw.limit, raw.timeout_ms)?;
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
            limit,
            after: None,
            max_age,
            timeout,
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
        let (tenants, tags) = canonical_selection(&self.tenants, &self.tags);
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
        selects(&self.tenants, &self.tags, tenant)
    }
}

/// A fan-out's `limit` and `timeout_ms` (`/scores`, `/controls`), defaulted and checked: the
/// page size and the deadline.
fn page_and_deadline(
    limit: Option<i64>,
    timeout_ms: Option<i64>,
) -> Result<(usize, Duration), QueryError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(QueryError::Limit(limit));
    }
    let timeout_ms = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(QueryError::Timeout(timeout_ms));
    }
    let limit = usize::try_from(limit).map_err(|_| QueryError::Limit(limit))?;
    Ok((limit, Duration::from_millis(timeout_ms.unsigned_abs())))
}

/// Whether a fan-out's `tenant` and `tag` filters (`/scores`, `/controls`) select `tenant`:
/// each empty filter selects all.
fn selects(tenants: &[String], tags: &[String], tenant: &Tenant) -> bool {
    (tenants.is_empty() || tenants.iter().any(|id| id == tenant.id.as_str()))
        && (tags.is_empty() || tenant.tags.iter().any(|tag| tags.contains(tag)))
}

/// A fan-out's `tenant` and `tag` filters as a cursor binds them: sorted, without repeats, so
/// that the same selection written in another order pages on.
fn canonical_selection(tenants: &[String], tags: &[String]) -> (Vec<String>, Vec<String>) {
    let canonical = |list: &[String]| {
        let mut list = list.to_vec();
        list.sort();
        list.dedup();
        list
    };
    (canonical(tenants), canonical(tags))
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
            .map(|served| served.reading().score)
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
}

/// One page of `/scores`.
#[derive(Debug, Clone)]
pub struct Page {
    /// When the answer was put together.
    pub generated_at: SystemTime,
    /// Whether every matching item is `ok`.
    pub complete: bool,
    /// Whether the changes (`change_Nd`) were read from the history: `false` when it is off,
    /// not connected, still loading at start-up, failing or too slow for the deadline (every
    /// change is then `None` because it is unknown, not because there is no point that old).
    pub changes_ready: bool,
    /// Over every matching tenant.
    pub summary: Summary,
    /// This page's items, in order.
    pub items: Vec<Item>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
    /// This answer's share of the [`AnswerBudget`]: kept until the page is rendered.
    pub reservation: Reservation,
}

/// Answers a query over the tenants the caller may see (`visible`): every matching tenant is
/// asked of the cache at once, and none is waited for past `query.timeout` (those are
/// `deadline_exceeded` items; their fetches go on and fill the cache).
///
/// The answer first reserves its tenants in `budget` (waiting its turn behind other big
/// answers; the wait counts in `query.timeout`, so cached scores are still served after it and
/// only fetches are cut short), and hands the reservation over in the [`Page`].
///
/// The deadline bounds the whole fan-out, starting it included: with tens of thousands of cold
/// tenants, merely asking the cache for each (and starting their fetches) takes seconds. A
/// tenant not yet asked for when the deadline passes is not asked at all: it is a
/// `deadline_exceeded` item, and no fetch is started for it (the refresher or a later request
/// will).
///
/// The changes (`change_Nd`) come from `history` in one query over the matching tenants, run
/// beside the fan-out: a history that is off, away or slow leaves them `None` and the page says
/// so (`changes_ready`). Sorted by a change, the answer waits for them up to the deadline (the
/// order depends on them); otherwise for a short grace after the scores.
pub async fn scores(
    cache: &ScoreCache,
    history: Option<&Arc<History>>,
    budget: &AnswerBudget,
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
    let reservation = budget.reserve(selected.len()).await;
    let ids: Vec<TenantId> = selected.iter().map(|tenant| tenant.id.clone()).collect();
    let past = past_scores(history, ids, metric, wait_until);
    let (mut ready, waiting) = fan_out(cache, selected, metric, max_age, wait_until);
    ready.retain(|item| query.status.is_none_or(|status| item.status() == status));
    let fan_out = waiting
        .filter(|item| {
            let keep = query.status.is_none_or(|status| item.status() == status);
            futures::future::ready(keep)
        })
        .collect::<Vec<Item>>();
    // The scores decide when the answer is ready; the changes get a short grace after them,
    // or up to the deadline when they decide the order.
    let mut fan_out = std::pin::pin!(fan_out);
    let mut past = std::pin::pin!(past);
    let mut found = None;
    let mut items = loop {
        tokio::select! {
            items = &mut fan_out => break items,
            result = &mut past, if found.is_none() => found = Some(result),
        }
    };
    let past = match found {
        Some(past) => past,
        None => {
            let grace = if query.sort.is_by_change() {
                wait_until
            } else {
                (Instant::now() + CHANGES_GRACE).min(wait_until)
            };
            tokio::time::timeout_at(grace, past)
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!("history: changes not ready in time, served as null");
                    None
                })
        }
    };
    let changes_ready = past.is_some();
    let mut past = past.unwrap_or_default();
    // `ready` has room for every tenant: appending to it copies no item twice.
    ready.append(&mut items);
    let mut items = ready;
    for item in &mut items {
        if let Some(found) = past.remove(&item.tenant.id) {
            item.past = found;
        }
    }
    drop(past);
    let summary = Summary::of(&items);
    let page = paginate(&mut items, query);
    Page {
        generated_at: SystemTime::now(),
        complete: summary.stale == 0 && summary.failed == 0,
        changes_ready,
        summary,
        next_cursor: page.1,
        items: page.0,
        reservation,
    }
}

/// The `metric` of every tenant of `selected`: the items the cache gives at once, and a stream
/// of the others, none waited for past `wait_until` (those are `deadline_exceeded` items; their
/// fetches go on and fill the cache). A tenant not yet asked for when the deadline passes is
/// not asked at all.
pub(crate) fn fan_out(
    cache: &ScoreCache,
    selected: Vec<Arc<Tenant>>,
    metric: Metric,
    max_age: Option<Duration>,
    wait_until: Instant,
) -> (Vec<Item>, impl futures::Stream<Item = Item> + '_) {
    // Fresh scores the cache can give at once need no future each: on a warm `/scores` that
    // is every tenant, and a future per tenant (built, moved, polled) was most of its time.
    let mut ready = Vec::with_capacity(selected.len());
    let mut waiting = Vec::new();
    let asked_at = Instant::now();
    for tenant in selected {
        match cache.get_fresh_now(&tenant, metric, max_age, asked_at) {
            Some(served) => ready.push(Item {
                tenant,
                metric,
                outcome: Ok(served),
                past: Past::default(),
            }),
            None => waiting.push(tenant),
        }
    }
    let stream = futures::stream::iter(waiting)
        .map(move |tenant| async move {
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
        .buffer_unordered(CONCURRENCY);
    (ready, stream)
}

/// The matching tenants' scores at the ends of past days, in one query, given up at
/// `wait_until`; `None` when the history is off, not connected, failing or too slow.
async fn past_scores(
    history: Option<&Arc<History>>,
    tenants: Vec<TenantId>,
    metric: Metric,
    wait_until: Instant,
) -> Option<PastScores> {
    let history = history?;
    let now = time::OffsetDateTime::now_utc();
    match tokio::time::timeout_at(wait_until, history.changes(&tenants, metric, now)).await {
        Ok(Err(HistoryError::NotConnected)) => None,
        Ok(Ok(past)) => Some(past),
        Ok(Err(error)) => {
            tracing::warn!(
                "history: changes not available, served as null: {}",
                crate::telemetry::error_chain(&error)
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "history: changes not ready within the request's deadline, served as null"
            );
            None
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
        // The page lives on while it is rendered: without the other tenants' room.
        items.shrink_to_fit();
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
mod tests;
