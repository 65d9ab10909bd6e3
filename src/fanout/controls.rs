//! `GET /controls` without HTTP: every control across the tenants a caller may see, one row per
//! control ([`crate::controls::summarize`]), fetched with the same fan-out, deadline and
//! partial-results rules as `/scores`, paged with the same sealed cursors.

use super::CONCURRENCY;
use super::{fan_out, CursorCodec, QueryError};
use crate::cache::ScoreError;
use crate::controls::{
    summarize, Category, ControlFilter, ControlSort, ControlSummary, Status, TenantControl,
};
use crate::model::Metric;
use crate::tenant_controls::ControlBook;
use crate::tenants::{Registry, Tenant};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A `/controls` query as the caller wrote it (numbers signed, so that bad values get a clear
/// 400).
#[derive(Debug, Clone, Default)]
pub struct RawControlsQuery {
    /// Tenant ids to include (empty: all).
    pub tenants: Vec<String>,
    /// Tags, any of which includes a tenant (empty: all).
    pub tags: Vec<String>,
    /// Only controls of this category.
    pub category: Option<Category>,
    /// Only controls some tenant has in this status.
    pub status: Option<Status>,
    /// Order (default most points to gain first).
    pub sort: Option<ControlSort>,
    /// Rows per page.
    pub limit: Option<i64>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// How long to wait for slow tenants, in milliseconds.
    pub timeout_ms: Option<i64>,
}

/// Where a page ended: the last row's sort values and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct After {
    points: f64,
    rank: Option<u32>,
    id: String,
}

/// A validated `/controls` query, bound to the caller who asked it (for its cursors).
#[derive(Debug, Clone)]
pub struct ControlsQuery {
    /// Tenant ids to include (empty: all).
    pub tenants: Vec<String>,
    /// Tags, any of which includes a tenant (empty: all).
    pub tags: Vec<String>,
    /// Which controls are kept.
    pub filter: ControlFilter,
    /// Order.
    pub sort: ControlSort,
    /// Rows per page.
    pub limit: usize,
    /// Rows start strictly after this one.
    after: Option<After>,
    /// How long to wait for slow tenants.
    pub timeout: Duration,
    cursors: Arc<CursorCodec>,
    caller: String,
}

impl ControlsQuery {
    /// Validates a raw query; the cursor must have been issued by `cursors` for the same
    /// filters and order and the same `caller`.
    pub fn parse(
        raw: RawControlsQuery,
        cursors: Arc<CursorCodec>,
        caller: &str,
    ) -> Result<Self, QueryError> {
        let (limit, timeout) = super::page_and_deadline(raw.limit, raw.timeout_ms)?;
        let mut query = Self {
            tenants: raw.tenants,
            tags: raw.tags,
            filter: ControlFilter {
                category: raw.category,
                status: raw.status,
                ..ControlFilter::default()
            },
            sort: raw.sort.unwrap_or(ControlSort::PointsToGain),
            limit,
            after: None,
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

    fn fingerprint(&self) -> String {
        let (tenants, tags) = super::canonical_selection(&self.tenants, &self.tags);
        CursorCodec::binding(&serde_json::json!([
            "controls",
            tenants,
            tags,
            self.filter.category,
            self.filter.status,
            self.sort.as_str(),
            self.caller
        ]))
    }

    fn selects(&self, tenant: &Tenant) -> bool {
        tenant.has(Metric::Secure) && super::selects(&self.tenants, &self.tags, tenant)
    }
}

/// A tenant whose controls are not in the answer, and why.
#[derive(Debug, Clone)]
pub struct FailedTenant {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// Why: the code the single-tenant route would have answered.
    pub error: ScoreError,
}

/// One page of `/controls`.
#[derive(Debug, Clone)]
pub struct ControlsPage {
    /// When the answer was put together.
    pub generated_at: SystemTime,
    /// Whether every matching tenant's controls are in.
    pub complete: bool,
    /// How many tenants' controls are summed up.
    pub tenants: usize,
    /// This page's rows, in order.
    pub rows: Vec<ControlSummary<String>>,
    /// The matching tenants whose controls are not in, by id.
    pub failed: Vec<FailedTenant>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
}

/// A tenant's controls, or why there are none.
type Outcome = Result<Arc<[TenantControl]>, ScoreError>;

/// Answers a `/controls` query over the tenants the caller may see (`visible`) that have the
/// `secure` metric: each tenant's score as `/scores` gets it (cache, fan-out, one deadline),
/// then its controls ([`ControlBook::controls`], profiles fetched when due), summed up per
/// control. A tenant that fails or is not done by the deadline is in `failed`.
pub async fn controls(
    cache: &crate::cache::ScoreCache,
    book: &Arc<ControlBook>,
    registry: &Registry,
    visible: impl Fn(&Tenant) -> bool,
    query: &ControlsQuery,
) -> ControlsPage {
    let wait_until = crate::quota::instant_after(Instant::now(), query.timeout);
    let selected: Vec<Arc<Tenant>> = registry
        .all()
        .iter()
        .filter(|tenant| visible(tenant) && query.selects(tenant))
        .cloned()
        .collect();
    for tenant in selected.iter().filter(|tenant| tenant.has(Metric::Secure)) {
        book.want(tenant);
    }
    let (ready, waiting) = fan_out(cache, selected, Metric::Secure, None, wait_until);
    let mut items = waiting.collect::<Vec<_>>().await;
    items.extend(ready);
    let outcomes: Vec<(Arc<Tenant>, Outcome)> = futures::stream::iter(items)
        .map(|item| async move {
            let outcome = match item.outcome {
                Ok(served) => book
                    .controls(&item.tenant, served.reading(), false, wait_until)
                    .await
                    .map(|joined| joined.controls)
                    .map_err(|error| error.into_score_error()),
                Err(error) => Err(error),
            };
            (item.tenant, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut joined = Vec::new();
    let mut failed = Vec::new();
    for (tenant, outcome) in outcomes {
        match outcome {
            Ok(controls) => joined.push((tenant.id.to_string(), controls)),
            Err(error) => failed.push(FailedTenant { tenant, error }),
        }
    }
    joined.sort_by(|a, b| a.0.cmp(&b.0));
    failed.sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
    let mut rows = summarize(
        joined.iter().map(|(id, controls)| (id, controls.as_ref())),
        &query.filter,
        query.sort,
    );
    if let Some(after) = &query.after {
        rows.retain(|row| compare(query.sort, row, after) == Ordering::Greater);
    }
    let next_cursor = (rows.len() > query.limit)
        .then(|| {
            rows.truncate(query.limit);
            rows.last().map(|row| {
                let after = After {
                    points: row.points_to_gain,
                    rank: row.profile.rank,
                    id: row.id().to_owned(),
                };
                query.cursors.encode(&after, &query.fingerprint())
            })
        })
        .flatten();
    ControlsPage {
        generated_at: SystemTime::now(),
        complete: failed.is_empty(),
        tenants: joined.len(),
        rows,
        failed,
        next_cursor,
    }
}

/// Where `row` stands against the position `after`, in `sort` order (as `summarize` sorts).
fn compare(sort: ControlSort, row: &ControlSummary<String>, after: &After) -> Ordering {
    let first = match sort {
        ControlSort::PointsToGain => after.points.total_cmp(&row.points_to_gain),
        ControlSort::Rank => row
            .profile
            .rank
            .unwrap_or(u32::MAX)
            .cmp(&after.rank.unwrap_or(u32::MAX)),
        ControlSort::Id => Ordering::Equal,
    };
    first.then_with(|| row.id().cmp(after.id.as_str()))
}
