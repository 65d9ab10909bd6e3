//! The CSV of `/scores` under test: RFC 4180 quoting, the header row and the row fields.

use super::csv_export::{csv_writer, CsvRow, CSV_HEADER};
use super::*;

#[test]
fn csv_fields_are_quoted_as_rfc_4180_says() {
    let mut writer = csv_writer();
    writer
        .write_record(["plain", "a,b", "say \"hi\"", "two\r\nlines", ""])
        .unwrap();
    let out = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    assert_eq!(
        out,
        "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\r\nlines\",\r\n"
    );
}

fn list(items: Vec<ScoreItem<'_>>) -> ScoreList<'_> {
    ScoreList {
        generated_at: "2026-11-29T10:00:12Z".to_owned(),
        complete: false,
        changes_ready: true,
        summary: Summary::of(&[]),
        items,
        next_cursor: None,
    }
}

#[test]
fn an_empty_page_is_a_header_row_whose_columns_are_the_row_fields() {
    let out = String::from_utf8(to_csv(&list(vec![])).unwrap()).unwrap();
    assert_eq!(out, format!("{}\r\n", CSV_HEADER.join(",")));
    // The header names the fields of a row, in order.
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    let item = ScoreItem {
        tenant: "t",
        name: "n",
        tags: &[],
        status: ItemStatus::Ok,
        reading: None,
        age_seconds: None,
        source: None,
        warning: None,
        error: None,
        metric: Metric::Device,
        change_1d: None,
        change_7d: None,
        change_30d: None,
        change_90d: None,
    };
    writer.serialize(CsvRow::from(&item)).unwrap();
    let with_header = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    assert_eq!(
        with_header.lines().next(),
        Some(CSV_HEADER.join(",").as_str())
    );
}

#[test]
fn csv_rows_write_scores_as_json_numbers_and_codes_as_text() {
    let tags = ["gold".to_owned(), "eu".to_owned()];
    let reading = Reading {
        score: 340.0,
        time: "2019-12-03T09:15:58.1665846Z".to_owned(),
        fetched_at: time::macros::datetime!(2026-11-29 10:00:00.4 UTC).into(),
        secure: None,
    };
    let items = vec![
        ScoreItem {
            tenant: "contoso",
            name: "Contoso, Ltd",
            tags: &tags,
            status: ItemStatus::Stale,
            reading: Some(&reading),
            age_seconds: Some(12),
            source: Some(SourceView::Stale),
            warning: Some(WarningView {
                code: Code::UpstreamThrottled,
                detail: "slow down".to_owned(),
            }),
            error: None,
            metric: Metric::Device,
            change_1d: None,
            change_7d: Some(-12.5),
            change_30d: None,
            change_90d: None,
        },
        ScoreItem {
            tenant: "litware",
            name: "Litware",
            tags: &[],
            status: ItemStatus::Error,
            reading: None,
            age_seconds: None,
            source: None,
            warning: None,
            error: Some(ItemErrorView {
                code: Code::DeadlineExceeded,
                status: 504,
                detail: "late".to_owned(),
            }),
            metric: Metric::Device,
            change_1d: None,
            change_7d: Some(-12.5),
            change_30d: None,
            change_90d: None,
        },
    ];
    let out = String::from_utf8(to_csv(&list(items)).unwrap()).unwrap();
    let rows: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(
        rows[1],
        "contoso,\"Contoso, Ltd\",gold;eu,stale,340,2019-12-03T09:15:58.1665846Z,\
         2026-11-29T10:00:00Z,12,stale,upstream_throttled,slow down,device,,,,,,,,,-12.5,,"
    );
    assert_eq!(
        rows[2],
        "litware,Litware,,error,,,,,,deadline_exceeded,late,device,,,,,,,,,-12.5,,"
    );
    assert_eq!(rows[3], "");
    assert_eq!(rows.len(), 4);
}
