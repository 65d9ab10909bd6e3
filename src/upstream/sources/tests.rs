use super::secure::{read_secure_scores, MAX_BASIS_CHARS, MAX_COMPARISONS};
use super::*;
use crate::upstream::{Categories, Comparison, SecureDetails};

#[test]
fn every_metric_has_exactly_one_source() {
    for metric in Metric::ALL {
        let count = SOURCES
            .iter()
            .filter(|source| source.metric == metric)
            .count();
        assert_eq!(count, 1, "{metric}: add its file's SOURCE to SOURCES");
    }
    assert_eq!(SOURCES.len(), Metric::ALL.len());
}

#[test]
fn only_secure_keeps_a_daily_history() {
    let daily: Vec<Metric> = SOURCES
        .iter()
        .filter(|source| source.daily.is_some())
        .map(|source| source.metric)
        .collect();
    assert_eq!(daily, [Metric::Secure]);
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
fn a_source_is_asked_under_the_tenants_base_url_for_its_service() {
    let tenant = crate::policy::testing::registration("t", crate::policy::testing::DEFENDER_LIMITS);
    let transport = Transport {
        http: reqwest::Client::new(),
        max_body_bytes: 1024,
    };
    let url = |source: &'static Source| {
        HttpSource {
            source,
            transport: transport.clone(),
            sink: None,
        }
        .url(&tenant, source.path, source.query.iter().copied())
        .map(|url| url.to_string())
    };
    assert_eq!(
        url(&device::SOURCE).ok().as_deref(),
        Some("https://api.example.test/api/configurationScore")
    );
    assert_eq!(
        url(&secure::SOURCE).ok().as_deref(),
        Some("https://graph.microsoft.com/v1.0/security/secureScores?%24top=1")
    );
}

#[test]
fn a_next_link_is_followed_only_to_the_tenants_own_host() {
    let tenant = crate::policy::testing::registration("t", crate::policy::testing::DEFENDER_LIMITS);
    let source = HttpSource {
        source: &secure::SOURCE,
        transport: Transport {
            http: reqwest::Client::new(),
            max_body_bytes: 1024,
        },
        sink: None,
    };
    let base = source.base(&tenant).map(Url::to_string).unwrap_or_default();
    let base = base.trim_end_matches('/');
    let own = format!("{base}/v1.0/security/secureScoreControlProfiles?$skiptoken=x");
    assert!(source.next_link(&tenant, &own).is_ok(), "{own}");
    for elsewhere in [
        "https://evil.example/v1.0/security/secureScoreControlProfiles?$skip=50".to_owned(),
        own.replacen("https://", "http://", 1),
        "not a url".to_owned(),
    ] {
        assert!(
            matches!(
                source.next_link(&tenant, &elsewhere),
                Err(CallFailure::Unusable { .. })
            ),
            "{elsewhere}"
        );
    }
}
