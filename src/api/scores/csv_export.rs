//! The CSV of `/scores` (one row per item, the columns in a fixed order) and the one CSV writer
//! the history routes share: RFC 4180, CRLF line ends, a header row even on an empty page.

use super::{ScoreItem, ScoreList};
use crate::api::error::ApiError;
use crate::api::views::SourceView;
use crate::code::Code;
use crate::fanout::ItemStatus;
use crate::model::{rfc3339, Categories, Metric};
use actix_web::HttpResponse;
use serde::Serialize;

/// The CSV columns, in order: the fields of [`CsvRow`]. The columns of the first release come
/// first, in their first order, so that scripts reading columns by position keep working.
pub(super) const CSV_HEADER: [&str; 23] = [
    "tenant",
    "name",
    "tags",
    "status",
    "score",
    "time",
    "fetched_at",
    "age_seconds",
    "source",
    "error_code",
    "error_detail",
    "metric",
    "max_score",
    "percentage",
    "category_identity",
    "category_data",
    "category_device",
    "category_apps",
    "category_infrastructure",
    "change_1d",
    "change_7d",
    "change_30d",
    "change_90d",
];

/// One CSV row: an item, flattened. Enums are written as their JSON strings.
#[derive(Serialize)]
pub(super) struct CsvRow<'a> {
    tenant: &'a str,
    name: &'a str,
    /// Joined with `;`.
    tags: String,
    status: ItemStatus,
    /// Formatted as the JSON number would be read (`340`, not `340.0`).
    score: Option<String>,
    time: Option<&'a str>,
    fetched_at: Option<String>,
    age_seconds: Option<u64>,
    source: Option<SourceView>,
    /// The error's code, or the warning's for a stale score served because its refresh failed.
    error_code: Option<Code>,
    error_detail: Option<&'a str>,
    metric: Metric,
    /// `secure` only, as the JSON numbers.
    max_score: Option<String>,
    percentage: Option<String>,
    category_identity: Option<String>,
    category_data: Option<String>,
    category_device: Option<String>,
    category_apps: Option<String>,
    category_infrastructure: Option<String>,
    /// As the JSON numbers; empty when `null`.
    change_1d: Option<String>,
    change_7d: Option<String>,
    change_30d: Option<String>,
    change_90d: Option<String>,
}

impl<'a> From<&'a ScoreItem<'a>> for CsvRow<'a> {
    fn from(item: &'a ScoreItem<'a>) -> Self {
        let (error_code, error_detail) = match (&item.error, &item.warning) {
            (Some(error), _) => (Some(error.code), Some(error.detail.as_str())),
            (None, Some(warning)) => (Some(warning.code), Some(warning.detail.as_str())),
            (None, None) => (None, None),
        };
        let reading = item.reading;
        let secure = reading.and_then(|reading| reading.secure.as_ref());
        let category = |pick: fn(&Categories) -> f64| {
            secure.map(|secure| pick(&secure.categories).to_string())
        };
        Self {
            tenant: item.tenant,
            name: item.name,
            tags: item.tags.join(";"),
            status: item.status,
            score: reading.map(|reading| reading.score.to_string()),
            time: reading.map(|reading| reading.time.as_str()),
            fetched_at: reading.map(|reading| rfc3339(reading.fetched_at)),
            age_seconds: item.age_seconds,
            source: item.source,
            error_code,
            error_detail,
            metric: item.metric,
            max_score: secure.map(|secure| secure.max_score.to_string()),
            percentage: secure.map(|secure| secure.percentage.to_string()),
            category_identity: category(|c| c.identity),
            category_data: category(|c| c.data),
            category_device: category(|c| c.device),
            category_apps: category(|c| c.apps),
            category_infrastructure: category(|c| c.infrastructure),
            change_1d: item.change_1d.map(|value| value.to_string()),
            change_7d: item.change_7d.map(|value| value.to_string()),
            change_30d: item.change_30d.map(|value| value.to_string()),
            change_90d: item.change_90d.map(|value| value.to_string()),
        }
    }
}

/// A CSV writer as RFC 4180 says: CRLF line ends, fields quoted when they hold `,`, `"`, CR or
/// LF. The header row is written by the caller, so that an empty page still has one.
pub(super) fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new())
}

/// A CSV answer (RFC 4180: header row, CRLF, quoting where needed) of a header and rows of
/// text fields; the one writer of the history routes' CSV.
pub(in crate::api) fn csv_response<R, F>(header: &[&str], rows: R) -> Result<HttpResponse, ApiError>
where
    R: IntoIterator<Item = F>,
    F: IntoIterator<Item = String>,
{
    let mut writer = csv_writer();
    let written = writer.write_record(header).and_then(|()| {
        rows.into_iter()
            .try_for_each(|row| writer.write_record(row))
    });
    let body = written
        .and_then(|()| {
            writer
                .into_inner()
                .map_err(|error| csv::Error::from(error.into_error()))
        })
        .map_err(|error| ApiError::Internal(format!("writing the CSV answer: {error}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8; header=present")
        .body(body))
}

/// The page as CSV: a header row, then one row per item.
pub(super) fn to_csv(list: &ScoreList<'_>) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv_writer();
    writer.write_record(CSV_HEADER)?;
    for item in &list.items {
        writer.serialize(CsvRow::from(item))?;
    }
    writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))
}
