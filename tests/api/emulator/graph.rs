//! Graph's `GET /v1.0/security/secureScores`: shape, 90 deterministic daily snapshots newest
//! first, `$top` / `$skip`, Graph's error body, its rate limits and its concurrency cap.

use super::{assert_graph_error, client_for, start, start_healthy, wait_for_stats, Harness};
use scoregate::emulator::EmulatorOptions;
use scoregate::wire::SecureScores;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

async fn all_snapshots(app: &Harness, slug: &str, query: &str) -> Vec<Value> {
    let token = app.graph_token(slug).await;
    let answer = app.secure_scores(&token, query).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["value"]
        .as_array()
        .expect("a value array")
        .clone()
}

/// `yyyy-mm-dd` of the emulator's day `back` days ago.
fn date_back(app: &Harness, back: i64) -> String {
    let day = app.emu.now() - time::Duration::days(back);
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

#[tokio::test]
async fn secure_scores_have_graphs_shape_with_90_daily_snapshots_newest_first() {
    let app = start_healthy(2).await;
    let token = app.graph_token("contoso").await;
    let answer = app.secure_scores(&token, "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.header("request-id").is_some());
    assert!(answer
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
    let parsed: SecureScores = serde_json::from_str(&answer.body).expect("the wire shape");
    assert_eq!(parsed.value.len(), 90);
    let tenant_id = app.tenant("contoso").tenant_id.to_string();
    for (back, snapshot) in parsed.value.iter().enumerate() {
        let date = date_back(&app, back as i64);
        assert_eq!(snapshot.id, format!("{tenant_id}_{date}"));
        assert_eq!(snapshot.azure_tenant_id, tenant_id);
        assert_eq!(snapshot.created_date_time, format!("{date}T00:00:00Z"));
        let sum: f64 = snapshot.control_scores.iter().filter_map(|c| c.score).sum();
        assert!(
            (sum - snapshot.current_score).abs() < 1e-6,
            "{sum} vs {}",
            snapshot.current_score
        );
        assert!(snapshot.current_score > 0.0 && snapshot.current_score <= snapshot.max_score);
        let categories: BTreeSet<&str> = snapshot
            .control_scores
            .iter()
            .map(|c| c.control_category.as_str())
            .collect();
        assert_eq!(
            categories,
            BTreeSet::from(["Apps", "Data", "Device", "Identity", "Infrastructure"])
        );
        let bases: Vec<&str> = snapshot
            .average_comparative_scores
            .iter()
            .map(|c| c.basis.as_str())
            .collect();
        assert_eq!(bases, ["AllTenants", "TotalSeats", "IndustryTypes"]);
        assert!(snapshot.average_comparative_scores.iter().all(|c| c
            .average_score
            .is_some_and(|s| s > 0.0 && s < snapshot.max_score)));
        assert!(snapshot.licensed_user_count >= snapshot.active_user_count);
    }
    // Undocumented fields are there for clients to ignore.
    let raw = answer.json();
    assert!(raw["value"][0]["controlScores"][0]["scoreInPercentage"].is_number());
    assert!(raw["value"][0]["averageComparativeScores"][1]["seatSizeRangeLowerValue"].is_string());
    // Scores move from day to day, and tenants differ.
    let currents: BTreeSet<String> = parsed
        .value
        .iter()
        .map(|s| s.current_score.to_string())
        .collect();
    assert!(currents.len() > 10, "{currents:?}");
    let other = all_snapshots(&app, "fabrikam", "?$top=1").await;
    assert_ne!(other[0]["currentScore"], raw["value"][0]["currentScore"]);
}

#[tokio::test]
async fn snapshots_are_deterministic_and_pages_follow_top_and_skip() {
    let app = start_healthy(1).await;
    let all = all_snapshots(&app, "contoso", "").await;
    assert_eq!(all_snapshots(&app, "contoso", "?$top=1").await, all[..1]);
    assert_eq!(all_snapshots(&app, "contoso", "?%24top=2").await, all[..2]);
    assert_eq!(
        all_snapshots(&app, "contoso", "?$top=5&$skip=3").await,
        all[3..8]
    );
    assert_eq!(all_snapshots(&app, "contoso", "?$skip=89").await, all[89..]);
    assert!(all_snapshots(&app, "contoso", "?$skip=200")
        .await
        .is_empty());
    assert!(all_snapshots(&app, "contoso", "?$top=0").await.is_empty());
    assert_eq!(all_snapshots(&app, "contoso", "?$top=1000").await, all);
    // The same seed gives the same snapshots in another emulator.
    let twin = start_healthy(1).await;
    assert_eq!(all_snapshots(&twin, "contoso", "?$top=3").await, all[..3]);

    // A day later, yesterday's newest is the second one, unchanged.
    app.emu.advance_clock(Duration::from_secs(86_400));
    let later = all_snapshots(&app, "contoso", "?$top=2").await;
    assert_eq!(later[1], all[0]);
    assert_eq!(
        later[0]["createdDateTime"],
        format!("{}T00:00:00Z", date_back(&app, 0))
    );
}

#[tokio::test]
async fn bad_query_options_are_graph_400s() {
    let app = start_healthy(1).await;
    let token = app.graph_token("contoso").await;
    for query in [
        "?$top=-1",
        "?$top=abc",
        "?$top=1&$top=2",
        "?$filter=x",
        "?$skip=1.5",
    ] {
        let answer = app.secure_scores(&token, query).await;
        assert_graph_error(&answer, 400, "BadRequest");
    }
    // Custom (non-$) options are ignored, as OData does.
    assert_eq!(app.secure_scores(&token, "?foo=bar").await.status, 200);
    // Other methods and unknown Graph paths answer in Graph's shape too.
    let post = app
        .send(
            app.client
                .post(app.emu.secure_scores_url())
                .bearer_auth(&token),
        )
        .await;
    assert_graph_error(&post, 405, "Request_BadRequest");
    let url = format!("{}/v1.0/security/alerts", app.emu.graph_base());
    assert_graph_error(&app.send(app.client.get(url)).await, 404, "NotFound");
}

#[tokio::test]
async fn graph_throttles_per_tenant_with_retry_after_and_its_error_body() {
    let app = start(EmulatorOptions {
        tenants: 2,
        graph_quota_per_minute: Some(3),
        ..EmulatorOptions::default()
    })
    .await;
    let graph = app.graph_token("contoso").await;
    for _ in 0..3 {
        assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);
    }
    let refused = app.secure_scores(&graph, "?$top=1").await;
    assert_graph_error(&refused, 429, "TooManyRequests");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Defender and other tenants are unaffected.
    let defender = app.access_token("contoso").await;
    assert_eq!(app.score(&defender).await.status, 200);
    let other = app.graph_token("fabrikam").await;
    assert_eq!(app.secure_scores(&other, "?$top=1").await.status, 200);
    // Once the minute has passed, Graph answers again.
    app.emu.advance_clock(Duration::from_secs(60));
    assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);

    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        (
            counters.graph_calls,
            counters.graph_responses_429,
            counters.graph_quota_refusals
        ),
        (5, 1, 1)
    );
    assert_eq!(counters.quota_refusals, 0);
}

#[tokio::test]
async fn the_throttled_profile_answers_graph_429_too() {
    let app = start(EmulatorOptions {
        tenants: 1,
        faults: vec!["throttled=contoso".parse().unwrap()],
        throttled_retry_after_seconds: 7,
        ..EmulatorOptions::default()
    })
    .await;
    let graph = app.graph_token("contoso").await;
    let answer = app.secure_scores(&graph, "?$top=1").await;
    assert_graph_error(&answer, 429, "TooManyRequests");
    assert_eq!(answer.header("retry-after").as_deref(), Some("7"));
    assert_eq!(app.emu.stats().tenant("contoso").graph_quota_refusals, 0);
}

#[tokio::test]
async fn graph_caps_concurrent_requests_per_tenant_and_frees_slots_when_calls_end() {
    let app = start(EmulatorOptions {
        tenants: 2,
        faults: vec!["hang=contoso".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    let graph = app.graph_token("contoso").await;
    let client = client_for(&app.emu, None);
    let url = app.emu.secure_scores_url();
    let hung: Vec<_> = (0..4)
        .map(|_| {
            let request = client.get(&url).bearer_auth(&graph);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    wait_for_stats(&app.emu, |stats| {
        stats.tenant("contoso").graph_in_flight == 4
    })
    .await;

    let refused = app.secure_scores(&graph, "?$top=1").await;
    assert_graph_error(&refused, 429, "TooManyRequests");
    assert!(refused.header("retry-after").is_some());
    // Another tenant has its own slots.
    let other = app.graph_token("fabrikam").await;
    assert_eq!(app.secure_scores(&other, "?$top=1").await.status, 200);

    // The hung calls give up: their slots are released.
    for call in hung {
        call.abort();
    }
    drop(client);
    wait_for_stats(&app.emu, |stats| {
        stats.tenant("contoso").graph_in_flight == 0
    })
    .await;
    app.emu.set_fault("contoso", None).unwrap();
    assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);

    let counters = app.emu.stats().tenant("contoso");
    // The refused fifth call was in flight too, briefly.
    assert_eq!(counters.graph_max_concurrent, 5);
    assert_eq!(counters.graph_quota_refusals, 1);
}
