use super::*;

#[test]
fn weeks_start_on_monday_and_days_at_midnight_utc() {
    // 2026-11-25 is a Wednesday; its week started on Monday 2026-11-23.
    let wednesday = time::macros::datetime!(2026-11-25 13:45 UTC).unix_timestamp();
    assert_eq!(
        Interval::Week.bucket(wednesday),
        time::macros::datetime!(2026-11-23 0:00 UTC).unix_timestamp()
    );
    assert_eq!(
        Interval::Day.bucket(wednesday),
        time::macros::datetime!(2026-11-25 0:00 UTC).unix_timestamp()
    );
    assert_eq!(
        Interval::Hour.bucket(wednesday),
        time::macros::datetime!(2026-11-25 13:00 UTC).unix_timestamp()
    );
}

#[test]
fn statistics_take_the_middle_pair_for_an_even_count() {
    let at = OffsetDateTime::UNIX_EPOCH;
    let point = statistics(at, vec![4.0, 1.0, 3.0, 2.0]).expect("values");
    assert_eq!(
        (
            point.tenants,
            point.mean,
            point.median,
            point.min,
            point.max
        ),
        (4, 2.5, 2.5, 1.0, 4.0)
    );
    assert_eq!(
        statistics(at, vec![5.0, 1.0, 3.0]).map(|p| p.median),
        Some(3.0)
    );
    assert_eq!(statistics(at, Vec::new()), None);
}

#[test]
fn interval_names_round_trip() {
    assert_eq!(Interval::parse("week"), Some(Interval::Week));
    assert_eq!(Interval::parse("month"), None);
}
