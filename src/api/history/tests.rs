//! The history endpoints' query parsing: ranges, intervals and their bounds.

use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-29 10:00 UTC);

fn detail(result: Result<Range, ApiError>) -> String {
    match result {
        Err(ApiError::InvalidRequest(detail)) => detail,
        other => panic!("expected invalid_request, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_device_score_by_day_over_the_last_90_days() {
    let range = Range::parse(None, None, None, None, NOW, 400).expect("valid");
    assert_eq!(range.metric, Metric::Device);
    assert_eq!(range.interval, Interval::Day);
    assert_eq!(range.to, NOW);
    assert_eq!(range.from, datetime!(2026-08-31 10:00 UTC));
}

#[test]
fn the_default_start_is_shortened_to_the_retention() {
    let range = Range::parse(None, None, None, None, NOW, 30).expect("valid");
    assert_eq!(range.from, datetime!(2026-10-30 0:00 UTC));
}

#[test]
fn each_interval_bounds_its_range_and_the_default_start_keeps_within_it() {
    let hour = Some("hour");
    let refused = detail(Range::parse(
        None,
        Some("2026-10-28T09:59:59Z"),
        None,
        hour,
        NOW,
        400,
    ));
    assert!(
        refused.starts_with("bad query: from: interval=hour covers at most 31 days"),
        "{refused}"
    );
    let range = Range::parse(None, Some("2026-10-29T10:00:00Z"), None, hour, NOW, 400)
        .expect("31 days by hour");
    assert_eq!(range.from, datetime!(2026-10-29 10:00 UTC));
    // Without `from`: 31 days by hour, 90 by day.
    let range = Range::parse(None, None, None, hour, NOW, 400).expect("valid");
    assert_eq!(range.from, datetime!(2026-10-29 10:00 UTC));
    // Days: up to 400; weeks: up to 1100 (within a longer retention).
    assert!(Range::parse(None, Some("2025-10-25T10:00:00Z"), None, None, NOW, 2_000).is_ok());
    let refused = detail(Range::parse(
        None,
        Some("2025-10-24T10:00:00Z"),
        None,
        None,
        NOW,
        2_000,
    ));
    assert!(
        refused.contains("interval=day covers at most 400 days"),
        "{refused}"
    );
    let week = Some("week");
    assert!(Range::parse(None, Some("2025-01-01T00:00:00Z"), None, week, NOW, 2_000).is_ok());
    let refused = detail(Range::parse(
        None,
        Some("2023-01-01T00:00:00Z"),
        None,
        week,
        NOW,
        2_000,
    ));
    assert!(
        refused.contains("interval=week covers at most 1100 days"),
        "{refused}"
    );
}

#[test]
fn every_refusal_names_its_parameter() {
    // (metric, from, to, interval, the start of the detail)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );
    let cases: [Case; 7] = [
        (Some("score"), None, None, None, "metric:"),
        (None, None, None, Some("month"), "interval:"),
        (None, Some("yesterday"), None, None, "from:"),
        (None, None, Some("2026-11-29"), None, "to:"),
        (
            None,
            Some("2026-11-20T00:00:00Z"),
            Some("2026-11-10T00:00:00Z"),
            None,
            "from: after to",
        ),
        (
            None,
            Some("2024-01-01T00:00:00Z"),
            None,
            None,
            "from: older than the retention",
        ),
        (
            None,
            None,
            Some("2024-01-01T00:00:00Z"),
            None,
            "to: older than the retention",
        ),
    ];
    for (metric, from, to, interval, expected) in cases {
        let detail = detail(Range::parse(metric, from, to, interval, NOW, 400));
        assert!(
            detail.starts_with(&format!("bad query: {expected}")),
            "{detail}"
        );
    }
}
