//! The store's read queries: one tenant's history, the portfolio of many tenants (and its
//! statement), and the day-over-day changes.

use super::{Bucket, Store, CHANGES_CHUNK, PORTFOLIO_TENANTS};
use crate::history::{
    statistics, HistoryError, Interval, Metric, Past, Point, PortfolioPoint, DAY,
};
use futures::TryStreamExt;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};
use time::OffsetDateTime;

impl Store {
    /// One tenant's points of `metric` from `from` to `to` (both included; `from` is taken to
    /// the start of its bucket), one per `interval` bucket, oldest first.
    pub async fn history(
        &self,
        tenant: &str,
        metric: Metric,
        from: OffsetDateTime,
        to: OffsetDateTime,
        interval: Interval,
    ) -> Result<Vec<Point>, HistoryError> {
        let rows = sqlx::query(
            "SELECT at, last, last_at, min, max, samples, max_score FROM history_points \
             WHERE tenant = $1 AND metric = $2 AND at >= $3 AND at <= $4 ORDER BY at",
        )
        .bind(tenant)
        .bind(metric.as_str())
        .bind(interval.bucket(from.unix_timestamp()))
        .bind(to.unix_timestamp())
        .fetch_all(&self.pool)
        .await?;
        let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
        for row in &rows {
            let row = Bucket::from_row(row)?;
            let bucket = interval.bucket(row.at);
            buckets
                .entry(bucket)
                .and_modify(|merged| merged.merge(&row))
                .or_insert(row);
        }
        Ok(buckets
            .into_iter()
            .filter_map(|(bucket, row)| {
                Some(Point {
                    at: OffsetDateTime::from_unix_timestamp(bucket).ok()?,
                    score: row.last,
                    min: row.min,
                    max: row.max,
                    samples: row.samples,
                    max_score: row.max_score,
                })
            })
            .collect())
    }

    /// The portfolio of `tenants` from `from` to `to`: per `interval` bucket, statistics over
    /// each tenant's last score in the bucket. Buckets without any score are left out.
    ///
    /// The cost follows the caller's tenants, not the portfolio's: the statement names them
    /// (each one a seek on the primary key), the database picks each one's last score per
    /// bucket and sends the rows ordered by bucket, and they are folded one bucket at a time,
    /// so memory holds one bucket's scores at most, whatever the range.
    pub async fn portfolio(
        &self,
        tenants: &HashSet<String>,
        metric: Metric,
        from: OffsetDateTime,
        to: OffsetDateTime,
        interval: Interval,
    ) -> Result<Vec<PortfolioPoint>, HistoryError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let (width, offset) = interval.geometry();
        let start = interval.bucket(from.unix_timestamp());
        let end = to.unix_timestamp();
        let named = tenants.len() <= PORTFOLIO_TENANTS;
        // Built from numbers only (placeholders); every value is bound. Not kept prepared: the
        // text differs with the number of tenants.
        let query = if named {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(portfolio_sql(tenants.len())))
                .persistent(false)
                .bind(metric.as_str())
                .bind(start)
                .bind(width)
                .bind(end);
            for tenant in tenants {
                query = query.bind(tenant.as_str());
            }
            query
        } else {
            sqlx::query(sqlx::AssertSqlSafe(portfolio_sql(0)))
                .persistent(false)
                .bind(metric.as_str())
                .bind(start)
                .bind(offset)
                .bind(width)
                .bind(end)
        };
        let mut rows = query.fetch(&self.pool);
        let mut points = Vec::new();
        let mut current: Option<(i64, Vec<f64>)> = None;
        while let Some(row) = rows.try_next().await? {
            if !named {
                let tenant: String = row.try_get("tenant")?;
                if !tenants.contains(&tenant) {
                    continue;
                }
            }
            let bucket: i64 = row.try_get("bucket")?;
            // No reading of this tenant in this bucket.
            let Some(last) = row.try_get::<Option<f64>, _>("last")? else {
                continue;
            };
            match &mut current {
                Some((at, values)) if *at == bucket => values.push(last),
                _ => {
                    if let Some((at, values)) = current.replace((bucket, vec![last])) {
                        points.extend(bucket_statistics(at, values));
                    }
                }
            }
        }
        if let Some((at, values)) = current {
            points.extend(bucket_statistics(at, values));
        }
        Ok(points)
    }

    /// Each tenant's score at the end of the day 1, 7, 30 and 90 days before `now`'s day: the
    /// last point that started before the next midnight. One statement per 30,000 tenants, each
    /// look-up a seek on the primary key. Tenants without any point that old get `None`s.
    ///
    /// The 90-day score falls back to the oldest point of the day after, when there is none
    /// before: Graph keeps 90 daily snapshots, the oldest stamped at the midnight that *ends*
    /// the day 90 days ago, so a tenant back-filled today has a `change_90d` from day one.
    pub async fn changes(
        &self,
        tenants: &[String],
        metric: Metric,
        now: OffsetDateTime,
    ) -> Result<HashMap<String, Past>, HistoryError> {
        let today = Interval::Day.bucket(now.unix_timestamp());
        // The end of the day N days ago is the start of the day N − 1 days ago.
        let cutoffs = [1_i64, 7, 30, 90].map(|days| today - (days - 1) * DAY);
        let mut out = HashMap::with_capacity(tenants.len());
        for chunk in tenants.chunks(CHANGES_CHUNK) {
            let values = (0..chunk.len())
                .map(|index| format!("(${})", index + 7))
                .collect::<Vec<_>>()
                .join(", ");
            let look_up = |cutoff: usize| {
                format!(
                    "(SELECT p.last FROM history_points p WHERE p.tenant = t.tenant \
                     AND p.metric = $1 AND p.at < ${cutoff} ORDER BY p.at DESC LIMIT 1)"
                )
            };
            // The oldest point from the 90-day cut-off to a day later ($5 to $6).
            let oldest_after = "(SELECT p.last FROM history_points p WHERE p.tenant = t.tenant \
                 AND p.metric = $1 AND p.at >= $5 AND p.at < $6 ORDER BY p.at LIMIT 1)";
            let sql = format!(
                "WITH t(tenant) AS (VALUES {values}) SELECT t.tenant AS tenant, \
                 {} AS ago_1d, {} AS ago_7d, {} AS ago_30d, \
                 COALESCE({}, {oldest_after}) AS ago_90d FROM t",
                look_up(2),
                look_up(3),
                look_up(4),
                look_up(5)
            );
            // Built from numbers only (placeholders); every value is bound.
            // Not kept prepared: the text differs with the number of tenants.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .persistent(false)
                .bind(metric.as_str());
            for cutoff in cutoffs {
                query = query.bind(cutoff);
            }
            query = query.bind(cutoffs[3] + DAY);
            for tenant in chunk {
                query = query.bind(tenant.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                out.insert(
                    row.try_get("tenant")?,
                    Past {
                        ago_1d: row.try_get("ago_1d")?,
                        ago_7d: row.try_get("ago_7d")?,
                        ago_30d: row.try_get("ago_30d")?,
                        ago_90d: row.try_get("ago_90d")?,
                    },
                );
            }
        }
        Ok(out)
    }
}

/// The portfolio statement for `tenants` named tenants (`$5` on: metric `$1`, the first
/// bucket `$2`, the width `$3`, the end `$4`): for every bucket and tenant, the score of the
/// tenant's point that starts last in the bucket (`NULL` without one), one seek on the primary
/// key each, ordered by bucket so that the caller folds one bucket at a time.
///
/// The point that starts last holds the bucket's last reading: hours start after their day's
/// midnight, and the roll-up folds a day's earlier hours first. The one exception is a day's
/// back-filled snapshot stamped later than the gateway's own reading of that day, whose day
/// point starts first; picking by start rather than by `last_at` halves the statement's cost
/// (a seek, not a sort, per cell), and either reading is that day's score.
///
/// With 0 tenants, the statement over every tenant of the metric (metric `$1`, start `$2`,
/// offset `$3`, width `$4`, end `$5`), for callers who see more tenants than a statement can
/// name: it reads the metric's range whole.
pub(super) fn portfolio_sql(tenants: usize) -> String {
    if tenants == 0 {
        return "SELECT tenant, bucket, last FROM ( \
            SELECT tenant, (at - $3) / $4 * $4 + $3 AS bucket, last, \
            ROW_NUMBER() OVER (PARTITION BY tenant, (at - $3) / $4 ORDER BY last_at DESC) AS rn \
            FROM history_points WHERE metric = $1 AND at >= $2 AND at <= $5 \
            ) ranked WHERE rn = 1 ORDER BY bucket"
            .to_owned();
    }
    let values = (0..tenants)
        .map(|index| format!("(${})", index + 5))
        .collect::<Vec<_>>()
        .join(", ");
    // `CROSS JOIN` keeps SQLite's loops in this order: buckets, then tenants.
    format!(
        "WITH RECURSIVE b(start) AS (SELECT $2 UNION ALL SELECT start + $3 FROM b \
            WHERE start + $3 <= $4), \
         t(tenant) AS (VALUES {values}) \
         SELECT t.tenant AS tenant, b.start AS bucket, \
            (SELECT p.last FROM history_points p WHERE p.tenant = t.tenant AND p.metric = $1 \
             AND p.at >= b.start AND p.at < b.start + $3 AND p.at <= $4 \
             ORDER BY p.at DESC LIMIT 1) AS last \
         FROM b CROSS JOIN t ORDER BY b.start"
    )
}

/// Statistics of one bucket, or nothing for a bucket start out of range.
fn bucket_statistics(at: i64, values: Vec<f64>) -> Option<PortfolioPoint> {
    statistics(OffsetDateTime::from_unix_timestamp(at).ok()?, values)
}
