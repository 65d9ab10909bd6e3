use super::graph::{read_secure_scores, MAX_BASIS_CHARS};
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
fn a_secure_score_snapshot_becomes_a_reading_with_all_five_categories() {
    let body = br#"{"value": [{
        "createdDateTime": "2026-11-29T00:00:00Z", "currentScore": 342.5, "maxScore": 863.0,
        "controlScores": [
            {"controlCategory": "Identity", "controlName": "MFA", "score": 10.1},
            {"controlCategory": "identity", "controlName": "PIM", "score": 0.2},
            {"controlCategory": "Device", "controlName": "ASR", "score": 5},
            {"controlCategory": "Apps", "controlName": "x", "score": null},
            {"controlCategory": "Quantum", "controlName": "new", "score": 99}],
        "averageComparativeScores": [
            {"basis": "AllTenants", "averageScore": 310.5, "seatSizeRangeLowerValue": 1},
            {"basis": "IndustryTypes", "averageScore": null}],
        "somethingNew": true
    }, {"createdDateTime": "2026-11-28T00:00:00Z", "currentScore": 1, "maxScore": 2}]}"#;
    let reading = read_secure_scores(body).unwrap();
    assert_eq!(reading.score, 342.5);
    assert_eq!(reading.time, "2026-11-29T00:00:00Z");
    let secure = reading.secure.unwrap();
    assert_eq!(secure.max_score, 863.0);
    assert_eq!(
        secure.categories,
        Categories {
            identity: 10.3,
            data: 0.0,
            device: 5.0,
            apps: 0.0,
            infrastructure: 0.0
        }
    );
    assert_eq!(
        secure.comparisons,
        vec![Comparison {
            basis: "AllTenants".to_owned(),
            average_score: 310.5
        }]
    );
    assert_eq!(secure.percentage, 39.69);
    let json = serde_json::to_value(secure.categories).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 5, "{json}");
}

#[test]
fn a_snapshot_with_thousands_of_comparisons_keeps_a_bounded_few_with_bounded_bases() {
    let comparisons: Vec<String> = (0..5_000)
        .map(|n| {
            format!(
                r#"{{"basis": "{}{n}", "averageScore": {n}}}"#,
                "b".repeat(200)
            )
        })
        .collect();
    let body = format!(
        r#"{{"value": [{{"createdDateTime": "2026-11-29T00:00:00Z", "currentScore": 1,
            "maxScore": 2, "averageComparativeScores": [{}]}}]}}"#,
        comparisons.join(",")
    );
    let secure = read_secure_scores(body.as_bytes()).unwrap().secure.unwrap();
    assert_eq!(secure.comparisons.len(), MAX_COMPARISONS);
    assert!(secure
        .comparisons
        .iter()
        .all(|c| c.basis.chars().count() == MAX_BASIS_CHARS));
}

#[test]
fn a_zero_maximum_is_zero_percent_and_an_empty_list_is_unusable() {
    assert_eq!(SecureDetails::percentage_of(0.0, 0.0), 0.0);
    assert!(matches!(
        read_secure_scores(br#"{"value": []}"#),
        Err(CallFailure::Unusable { .. })
    ));
    assert!(matches!(
        read_secure_scores(b"<html>"),
        Err(CallFailure::Unusable { .. })
    ));
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
