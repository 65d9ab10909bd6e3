//! The history's domain types: the interval of a query, the readings it records, the points,
//! portfolio statistics and past scores it serves, and its error.

use super::{DAY, HOUR};
use crate::model::{Metric, ScoreKey, TenantId};
use time::OffsetDateTime;

/// The width of the buckets a query groups points into.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
    /// One ISO week, Monday 00:00 UTC to Monday.
    Week,
}

impl Interval {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
        }
    }

    /// The longest range a query by this interval covers, in days: the points an hourly query
    /// reads grow 24 times as fast as a daily one's, so hours are kept to a month; days to
    /// about 13 months (the default retention), weeks to about three years.
    pub const fn max_range_days(self) -> i64 {
        match self {
            Self::Hour => 31,
            Self::Day => 400,
            Self::Week => 1_100,
        }
    }

    /// The interval named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Hour, Self::Day, Self::Week]
            .into_iter()
            .find(|interval| interval.as_str() == name)
    }

    /// (width, offset) in seconds: a bucket starts at `offset + k × width`. Weeks are offset by
    /// four days because 1970-01-01 was a Thursday and ISO weeks start on Monday.
    pub(super) fn geometry(self) -> (i64, i64) {
        match self {
            Self::Hour => (HOUR, 0),
            Self::Day => (DAY, 0),
            Self::Week => (7 * DAY, 4 * DAY),
        }
    }

    /// The start of the bucket holding `at` (Unix seconds).
    pub fn bucket(self, at: i64) -> i64 {
        let (width, offset) = self.geometry();
        (at - offset).div_euclid(width) * width + offset
    }
}

/// One successful reading, as the fetch path records it: the score body under its key. The
/// history keeps its `score` and, for `secure`, its `max_score`, at its `fetched_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Whose score, and which.
    pub key: ScoreKey,
    /// The score as the cache holds it and the API serves it.
    pub body: crate::model::Reading,
}

impl Reading {
    /// A reading of `score` fetched `at`, with neither a source time nor secure details: all the
    /// history keeps of a `device` or `exposure` score (what benchmarks and tests record).
    pub fn of_score(tenant: TenantId, metric: Metric, score: f64, at: OffsetDateTime) -> Self {
        Self {
            key: ScoreKey { tenant, metric },
            body: crate::model::Reading {
                score,
                time: String::new(),
                fetched_at: at.into(),
                secure: None,
            },
        }
    }

    /// When it was read: the gateway's fetch time, the point's time.
    pub fn at(&self) -> OffsetDateTime {
        OffsetDateTime::from(self.body.fetched_at)
    }

    /// The highest possible score (`secure` only).
    pub fn max_score(&self) -> Option<f64> {
        self.body.secure.as_ref().map(|secure| secure.max_score)
    }
}

/// One of Graph's daily secure score snapshots, for [`Store::insert_daily`](super::Store::insert_daily).
#[derive(Debug, Clone, PartialEq)]
pub struct DailySnapshot {
    /// The snapshot's time (`createdDateTime`); its UTC day is the point's day.
    pub at: OffsetDateTime,
    /// `currentScore`.
    pub score: f64,
    /// `maxScore`.
    pub max_score: Option<f64>,
}

/// One bucket of one tenant's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Point {
    /// The bucket's start (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, example = "2026-11-28T00:00:00Z")]
    pub at: OffsetDateTime,
    /// The last score read in the bucket.
    pub score: f64,
    /// The lowest score read in the bucket.
    pub min: f64,
    /// The highest score read in the bucket.
    pub max: f64,
    /// How many readings the bucket holds.
    pub samples: i64,
    /// The highest possible score at the last reading (`secure` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_score: Option<f64>,
}

/// One bucket of the portfolio: statistics over each visible tenant's last score in the bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PortfolioPoint {
    /// The bucket's start (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, example = "2026-11-28T00:00:00Z")]
    pub at: OffsetDateTime,
    /// Tenants with a score in the bucket.
    pub tenants: usize,
    /// Mean score.
    pub mean: f64,
    /// Median score (the mean of the two middle scores for an even count).
    pub median: f64,
    /// Lowest score.
    pub min: f64,
    /// Highest score.
    pub max: f64,
}

/// A tenant's score at the end of the day 1, 7, 30 and 90 days ago (`None` without a point that
/// old): `change_Nd = score_now − ago_Nd`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Past {
    /// At the end of yesterday.
    pub ago_1d: Option<f64>,
    /// At the end of the day 7 days ago.
    pub ago_7d: Option<f64>,
    /// At the end of the day 30 days ago.
    pub ago_30d: Option<f64>,
    /// At the end of the day 90 days ago.
    pub ago_90d: Option<f64>,
}

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database has not been reached yet since start (it is retried in the background).
    #[error("the history database is not connected yet")]
    NotConnected,
    /// The database failed or is unreachable.
    #[error("the history database failed")]
    Database(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("the history database's migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database could not be reached moments ago: the read was not tried (see
    /// [`ReadLimits::down_for`](super::ReadLimits::down_for)).
    #[error("the history database is away; tried again in {retry_after:?}")]
    Down {
        /// Until the next attempt.
        retry_after: std::time::Duration,
    },
    /// Every read permit is taken (see [`ReadLimits::permits`](super::ReadLimits::permits)).
    #[error("too many history reads at once")]
    Busy,
    /// The read took longer than its deadline (see [`ReadLimits::deadline`](super::ReadLimits::deadline)).
    #[error("the history read took longer than {after:?}")]
    Deadline {
        /// The deadline.
        after: std::time::Duration,
    },
}

impl From<sqlx::Error> for HistoryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// Mean, median, min and max of `values` (not empty), for the portfolio.
pub(super) fn statistics(at: OffsetDateTime, mut values: Vec<f64>) -> Option<PortfolioPoint> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let count = values.len();
    let middle = count / 2;
    let median = if count % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    };
    Some(PortfolioPoint {
        at,
        tenants: count,
        mean: values.iter().sum::<f64>() / count as f64,
        median,
        min: values[0],
        max: values[count - 1],
    })
}
