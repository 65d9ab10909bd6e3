use super::*;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn retry_after_in_seconds_is_read_and_bounded() {
    let now = at(1_000_000_000);
    assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::from_secs(1)));
    assert_eq!(parse_retry_after("7200", now), Some(MAX_RETRY_AFTER));
    assert_eq!(
        parse_retry_after("9999999999999999999", now),
        Some(MAX_RETRY_AFTER)
    );
    // More digits than a u64 holds is still "very long", not "unreadable".
    assert_eq!(
        parse_retry_after("99999999999999999999999999", now),
        Some(MAX_RETRY_AFTER)
    );
}

#[test]
fn retry_after_as_an_http_date_is_measured_from_now() {
    // Sun, 09 Sep 2001 01:46:40 GMT is 1,000,000,000 s after the epoch.
    let now = at(1_000_000_000);
    assert_eq!(
        parse_retry_after("Sun, 09 Sep 2001 01:47:40 GMT", now),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        parse_retry_after("Sun, 09 Sep 2001 01:00:00 GMT", now),
        Some(Duration::from_secs(1)),
        "a date in the past means retry now (at least 1 s)"
    );
    assert_eq!(
        parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
        Some(MAX_RETRY_AFTER)
    );
}

#[test]
fn metric_names_are_the_api_names_and_name_their_service() {
    for metric in Metric::ALL {
        assert_eq!(Metric::parse(metric.as_str()), Some(metric));
        assert_eq!(
            serde_json::to_value(metric).unwrap(),
            serde_json::json!(metric.as_str())
        );
    }
    assert_eq!(Metric::parse("Device"), None);
    assert_eq!(Metric::Exposure.service(), UpstreamService::Defender);
    assert_eq!(Metric::Secure.service(), UpstreamService::Graph);
}

#[test]
fn an_unreadable_retry_after_is_ignored() {
    let now = at(1_000_000_000);
    for value in ["", "-5", "1.5", "soon", "30s", "+30"] {
        assert_eq!(parse_retry_after(value, now), None, "{value:?}");
    }
}
