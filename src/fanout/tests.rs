//! `GET /scores` without HTTP under test: query parsing, cursors, the order and the statistics.

use super::summary::Statistics;
use super::*;
use aws_lc_rs::aead;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

fn key(errors_last: bool, number: f64, id: &str) -> SortKey {
    SortKey {
        errors_last,
        text: String::new(),
        number,
        id: id.to_owned(),
    }
}

fn raw() -> RawQuery {
    RawQuery::default()
}

fn codec() -> Arc<CursorCodec> {
    static CODEC: std::sync::OnceLock<Arc<CursorCodec>> = std::sync::OnceLock::new();
    CODEC
        .get_or_init(|| Arc::new(CursorCodec::random()))
        .clone()
}

fn parse(raw: RawQuery) -> Result<Query, QueryError> {
    Query::parse(raw, codec(), "portal")
}

#[test]
fn a_cursor_round_trips_for_the_same_query_and_caller() {
    let query = parse(raw()).unwrap();
    let cursor = codec().encode(&key(false, 12.5, "contoso"), &query.fingerprint());
    let parsed = parse(RawQuery {
        cursor: Some(cursor),
        ..raw()
    })
    .unwrap();
    assert_eq!(parsed.after, Some(key(false, 12.5, "contoso")));
}

#[test]
fn a_cursor_is_opaque_and_differs_each_time() {
    let query = parse(raw()).unwrap();
    let sort_key = SortKey {
        errors_last: false,
        text: "Contoso Ltd".to_owned(),
        number: 340.0,
        id: "contoso".to_owned(),
    };
    let first = codec().encode(&sort_key, &query.fingerprint());
    let second = codec().encode(&sort_key, &query.fingerprint());
    assert_ne!(first, second, "a fresh nonce per cursor");
    for cursor in [&first, &second] {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["contoso", "Contoso", "340", "\"i\""] {
            assert!(!text.contains(secret), "{secret} readable in {cursor}");
        }
    }
}

#[test]
fn a_tampered_or_foreign_cursor_is_refused() {
    let query = parse(raw()).unwrap();
    let cursor = codec().encode(&key(false, 1.0, "contoso"), &query.fingerprint());
    let mut flipped = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut forged_body = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    forged_body[aead::NONCE_LEN] ^= 1;
    for bad in [
        URL_SAFE_NO_PAD.encode(flipped),
        URL_SAFE_NO_PAD.encode(forged_body),
        cursor[..cursor.len() - 4].to_owned(),
        format!("{cursor}.AAAA"),
        "garbage".to_owned(),
        String::new(),
    ] {
        let result = parse(RawQuery {
            cursor: Some(bad.clone()),
            ..raw()
        });
        assert_eq!(result.unwrap_err(), QueryError::Cursor, "{bad}");
    }
    // The same cursor with other filters belongs to another query.
    let result = parse(RawQuery {
        cursor: Some(cursor.clone()),
        tags: vec!["gold".to_owned()],
        ..raw()
    });
    assert_eq!(result.unwrap_err(), QueryError::Cursor);
    // The same query by another caller.
    let result = Query::parse(
        RawQuery {
            cursor: Some(cursor.clone()),
            ..raw()
        },
        codec(),
        "other-key",
    );
    assert_eq!(result.unwrap_err(), QueryError::Cursor);
    // Another process's random key.
    let result = Query::parse(
        RawQuery {
            cursor: Some(cursor),
            ..raw()
        },
        Arc::new(CursorCodec::random()),
        "portal",
    );
    assert_eq!(result.unwrap_err(), QueryError::Cursor);
}

#[test]
fn replicas_sharing_a_configured_key_open_each_others_cursors() {
    let one = Arc::new(CursorCodec::from_secret(b"a shared secret of some length"));
    let two = Arc::new(CursorCodec::from_secret(b"a shared secret of some length"));
    let other = Arc::new(CursorCodec::from_secret(b"another secret entirely, not it"));
    let query = Query::parse(raw(), one.clone(), "portal").unwrap();
    let cursor = one.encode(&key(false, 2.0, "fabrikam"), &query.fingerprint());
    let on_two = Query::parse(
        RawQuery {
            cursor: Some(cursor.clone()),
            ..raw()
        },
        two,
        "portal",
    )
    .unwrap();
    assert_eq!(on_two.after, Some(key(false, 2.0, "fabrikam")));
    let on_other = Query::parse(
        RawQuery {
            cursor: Some(cursor),
            ..raw()
        },
        other,
        "portal",
    );
    assert_eq!(on_other.unwrap_err(), QueryError::Cursor);
    assert_eq!(format!("{one:?}"), "CursorCodec");
}

#[test]
fn bad_values_are_refused() {
    for (query, error) in [
        (
            RawQuery {
                limit: Some(0),
                ..raw()
            },
            QueryError::Limit(0),
        ),
        (
            RawQuery {
                limit: Some(100_000),
                ..raw()
            },
            QueryError::Limit(100_000),
        ),
        (
            RawQuery {
                timeout_ms: Some(0),
                ..raw()
            },
            QueryError::Timeout(0),
        ),
        (
            RawQuery {
                max_age: Some(-1),
                ..raw()
            },
            QueryError::MaxAge(-1),
        ),
    ] {
        assert_eq!(parse(query).unwrap_err(), error);
    }
    let defaults = parse(raw()).unwrap();
    assert_eq!(defaults.limit, 100);
    assert_eq!(defaults.timeout, Duration::from_secs(5));
    assert_eq!(defaults.sort, SortOrder::Tenant);
}

#[test]
fn score_keys_put_errors_last_and_break_ties_by_id() {
    let mut keys = [
        key(true, 0.0, "a-error"),
        key(false, 300.0, "b"),
        key(false, 100.0, "c"),
        key(false, 300.0, "a"),
        key(true, 0.0, "0-error"),
    ];
    keys.sort_by(SortKey::cmp);
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["c", "a", "b", "0-error", "a-error"]);
    // Descending scores are stored negated: the same comparison serves both orders.
    let mut keys = [
        key(false, -100.0, "c"),
        key(true, 0.0, "e"),
        key(false, -300.0, "b"),
        key(false, -300.0, "a"),
    ];
    keys.sort_by(SortKey::cmp);
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "e"]);
}

#[test]
fn derived_statistics_carry_no_float_noise() {
    let statistics = Statistics::of(vec![545.43, 545.4396, 545.4348, 545.4348, 545.4348]);
    assert_eq!(statistics.mean, Some(545.4348));
    let statistics = Statistics::of(vec![0.1, 0.2]);
    assert_eq!(
        (statistics.mean, statistics.median),
        (Some(0.15), Some(0.15))
    );
}

#[test]
fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
    fn stats(scores: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
        let s = Statistics::of(scores.to_vec());
        (s.min, s.max, s.mean, s.median)
    }
    assert_eq!(
        stats(&[340.0, 300.0]),
        (Some(300.0), Some(340.0), Some(320.0), Some(320.0))
    );
    assert_eq!(
        stats(&[5.0, 1.0, 3.0]),
        (Some(1.0), Some(5.0), Some(3.0), Some(3.0))
    );
    assert_eq!(
        stats(&[4.0, 1.0, 2.0, 10.0]),
        (Some(1.0), Some(10.0), Some(4.25), Some(3.0))
    );
    assert_eq!(stats(&[]), (None, None, None, None));
}
