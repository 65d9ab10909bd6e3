//! Graph's Secure Score controls in the emulator: 60–80 controls per snapshot with the fields
//! real answers carry (string-typed numbers and booleans, HTML), day-to-day movement and
//! regressions, `secureScoreControlProfiles` with `$top` / `$skip`, an absolute
//! `@odata.nextLink`, per-tenant states, Graph's checks, limits and counters, and the
//! `comparisons-outage` profile — read with the gateway's own lenient types.

use super::{assert_graph_error, start, start_healthy, Harness};
use crate::helpers::{emulator_options, spawn_app_with};
use scoregate::controls::graph::{ControlProfilesPage, SnapshotControls};
use scoregate::controls::{Interner, State, Status, TenantControl};
use scoregate::emulator::EmulatorOptions;
use scoregate::wire::SecureScores;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every profile of `slug`, following `@odata.nextLink` as given; and the pages' sizes.
async fn all_profiles(app: &Harness, token: &str, query: &str) -> (Vec<Value>, Vec<usize>) {
    let mut url = format!("{}{query}", app.emu.control_profiles_url());
    let mut profiles = Vec::new();
    let mut pages = Vec::new();
    loop {
        let answer = app.send(app.client.get(&url).bearer_auth(token)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        let value = body["value"].as_array().expect("a value array").clone();
        pages.push(value.len());
        profiles.extend(value);
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&app.emu.graph_base()), "absolute: {next}");
                url = next.to_owned();
            }
            None => return (profiles, pages),
        }
        assert!(pages.len() < 10, "paging never ends");
    }
}

#[tokio::test]
async fn snapshots_carry_60_to_80_controls_with_the_fields_real_answers_carry() {
    let app = start_healthy(6).await;
    let mut string_scores = 0;
    for tenant in app.emu.tenants() {
        let token = app.graph_token(&tenant.slug).await;
        let answer = app.secure_scores(&token, "?$top=1").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let raw = answer.json();
        let controls = raw["value"][0]["controlScores"].as_array().unwrap().clone();
        assert!((60..=80).contains(&controls.len()), "{}", controls.len());
        let categories: BTreeSet<&str> = controls
            .iter()
            .filter_map(|c| c["controlCategory"].as_str())
            .collect();
        assert_eq!(
            categories,
            BTreeSet::from(["Apps", "Data", "Device", "Identity", "Infrastructure"])
        );
        assert!(controls.iter().any(|c| c["controlCategory"] == "Device"
            && c["controlName"].as_str().unwrap().starts_with("scid_")));
        string_scores += controls.iter().filter(|c| c["score"].is_string()).count();
        assert!(controls
            .iter()
            .any(|c| c["on"] == "true" || c["on"] == "false"));
        assert!(controls
            .iter()
            .any(|c| c["count"].is_string() && c["total"].is_string()));
        assert!(controls.iter().any(|c| c["implementationStatus"]
            .as_str()
            .is_some_and(|text| text.contains("<li>"))));
        assert!(controls.iter().all(|c| c["lastSynced"].is_string()
            && c.get("scoreInPercentage").is_some()
            && c.get("description").is_some()));

        // The gateway's types read it all; the scores still sum to currentScore.
        let parsed: SecureScores = serde_json::from_str(&answer.body).unwrap();
        let snapshot = &parsed.value[0];
        let sum: f64 = snapshot.control_scores.iter().filter_map(|c| c.score).sum();
        assert!((sum - snapshot.current_score).abs() < 1e-6);
        let lenient: SnapshotControls = serde_json::from_value(raw["value"][0].clone()).unwrap();
        assert!(lenient.control_scores.iter().all(|c| c.score.is_some()));
    }
    assert!(string_scores > 0, "some scores come as strings");
}

#[tokio::test]
async fn controls_move_from_day_to_day_and_one_regresses_now_and_then() {
    let app = start_healthy(4).await;
    let mut regressions = 0;
    let mut moved = 0;
    for tenant in app.emu.tenants() {
        let token = app.graph_token(&tenant.slug).await;
        let (profiles, _) = all_profiles(&app, &token, "").await;
        let max_of = |id: &str| {
            profiles
                .iter()
                .find(|p| p["id"] == id)
                .and_then(|p| p["maxScore"].as_f64())
                .expect("every control has a profile")
        };
        let answer = app.secure_scores(&token, "").await;
        let snapshots: SecureScores = serde_json::from_str(&answer.body).unwrap();
        // Newest first: each pair is (a day, the day before).
        for pair in snapshots.value.windows(2) {
            let (later, earlier) = (&pair[0], &pair[1]);
            for (before, after) in earlier.control_scores.iter().zip(&later.control_scores) {
                assert_eq!(before.control_name, after.control_name, "a stable set");
                let max = max_of(&before.control_name);
                let (before, after) = (before.score.unwrap(), after.score.unwrap());
                moved += usize::from(before != after);
                // Done one day, below its maximum the next.
                regressions += usize::from(before >= max && after < max);
            }
        }
    }
    assert!(moved > 100, "{moved}");
    // Now and then: a few per tenant and quarter, not every day.
    assert!((1..=4 * 30).contains(&regressions), "{regressions}");
}

#[tokio::test]
async fn profiles_page_with_an_absolute_next_link_and_join_every_control_with_states() {
    let app = start_healthy(3).await;
    let token = app.graph_token("contoso").await;
    let (profiles, pages) = all_profiles(&app, &token, "").await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[0], 50);
    let ids: Vec<&str> = profiles.iter().map(|p| p["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.to_ascii_lowercase());
    assert_eq!(ids, sorted, "Graph lists profiles by id");
    assert!(profiles.iter().all(|p| p["emulatorNote"].is_string()));
    assert!(profiles.iter().any(|p| p["deprecated"] == true));
    assert!(profiles.iter().any(|p| p["actionUrl"]
        .as_str()
        .is_some_and(|url| url.contains("tid="))));

    // Smaller pages on request; the next link keeps $top.
    let first = app.control_profiles(&token, "?$top=10").await.json();
    assert_eq!(first["value"].as_array().unwrap().len(), 10);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(next.ends_with("?$top=10&$skip=10"), "{next}");
    let (rest, _) = all_profiles(&app, &token, &format!("?$top=10&$skip={}", ids.len() - 5)).await;
    assert_eq!(rest.len(), 5);
    assert_graph_error(
        &app.control_profiles(&token, "?$filter=x").await,
        400,
        "BadRequest",
    );

    // Every control of the snapshot has its profile; the maxima add up to maxScore; the
    // tenant has ignored and third-party controls.
    let snapshot = app.secure_scores(&token, "?$top=1").await.json()["value"][0].clone();
    let page: ControlProfilesPage = serde_json::from_value(serde_json::json!({
        "value": profiles,
    }))
    .unwrap();
    let interner = Interner::new();
    let tenant_id = app.tenant("contoso").tenant_id.to_string();
    let tenant_profiles = interner.tenant_profiles(&tenant_id, &page.value);
    let entries: SnapshotControls = serde_json::from_value(snapshot.clone()).unwrap();
    let controls = TenantControl::join(&interner, &entries.control_scores, &tenant_profiles);
    assert!(controls.iter().all(|c| !c.profile().is_bare()));
    let max: f64 = controls.iter().filter_map(|c| c.max_score()).sum();
    assert_eq!(max, snapshot["maxScore"].as_f64().unwrap());
    let states: BTreeSet<&str> = controls.iter().map(|c| c.state().as_str()).collect();
    assert!(
        states.contains("ignored") && states.contains("third_party"),
        "{states:?}"
    );
    assert!(controls
        .iter()
        .filter(|c| c.state() == State::ThirdParty)
        .all(|c| c.status() == Status::Done && c.points_to_gain() == 0.0));
    assert!(controls.iter().any(|c| c
        .action_url(&tenant_id)
        .is_some_and(|url| url.ends_with(&tenant_id))));
    // Another tenant has states of its own.
    let other = app.graph_token("fabrikam").await;
    let (other_profiles, _) = all_profiles(&app, &other, "").await;
    assert_ne!(
        other_profiles
            .iter()
            .map(|p| p["controlStateUpdates"].clone())
            .collect::<Vec<_>>(),
        profiles_states(&app, &token).await
    );

    // Each page is a Graph call of its own, counted apart from secureScores.
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(counters.control_profile_calls, 2 + 1 + 1 + 1 + 2);
    assert_eq!(counters.graph_calls, 1);
    assert_eq!(counters.graph_responses_4xx, 1);
}

async fn profiles_states(app: &Harness, token: &str) -> Vec<Value> {
    let (profiles, _) = all_profiles(app, token, "").await;
    profiles
        .into_iter()
        .map(|p| p["controlStateUpdates"].clone())
        .collect()
}

#[tokio::test]
async fn profiles_share_graphs_token_checks_limits_and_faults() {
    let app = start(EmulatorOptions {
        tenants: 3,
        graph_quota_per_minute: Some(3),
        faults: vec![
            "throttled=fabrikam".parse().unwrap(),
            "graph-forbidden=northwind".parse().unwrap(),
        ],
        ..EmulatorOptions::default()
    })
    .await;
    let tenants: Vec<String> = app.emu.tenants().iter().map(|t| t.slug.clone()).collect();
    let defender = app.access_token("contoso").await;
    assert_graph_error(
        &app.control_profiles(&defender, "").await,
        401,
        "InvalidAuthenticationToken",
    );
    let graph = app.graph_token("contoso").await;
    // One rate window for both Graph endpoints.
    assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);
    assert_eq!(app.control_profiles(&graph, "").await.status, 200);
    assert_eq!(app.control_profiles(&graph, "").await.status, 200);
    assert_graph_error(
        &app.control_profiles(&graph, "").await,
        429,
        "TooManyRequests",
    );
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        (
            counters.control_profile_calls,
            counters.graph_responses_429,
            counters.graph_quota_refusals
        ),
        (4, 1, 1)
    );

    let throttled = app.graph_token(&tenants[1]).await;
    let answer = app.control_profiles(&throttled, "").await;
    assert_graph_error(&answer, 429, "TooManyRequests");
    assert!(answer.header("retry-after").is_some());
    let forbidden = app.graph_token(&tenants[2]).await;
    assert_graph_error(
        &app.control_profiles(&forbidden, "").await,
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn a_comparisons_outage_sends_minus_one_or_nothing_and_the_gateway_still_serves_the_score() {
    let app = start(EmulatorOptions {
        tenants: 1,
        seed: 7,
        faults: vec!["comparisons-outage=contoso".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    let token = app.graph_token("contoso").await;
    let answer = app.secure_scores(&token, "").await;
    assert_eq!(answer.status, 200);
    let raw = answer.json();
    let seen: BTreeSet<String> = raw["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["averageComparativeScores"].to_string())
        .collect();
    assert_eq!(seen, BTreeSet::from(["-1".to_owned(), "[]".to_owned()]));
    let parsed: SecureScores = serde_json::from_str(&answer.body).unwrap();
    assert!(parsed
        .value
        .iter()
        .all(|s| s.average_comparative_scores.is_empty()
            && s.current_score > 0.0
            && !s.control_scores.is_empty()));

    let gateway = spawn_app_with(
        emulator_options(1, vec!["comparisons-outage=contoso".parse().unwrap()]),
        &[("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#)],
    )
    .await;
    let (status, _, body) = gateway
        .get_json("/tenants/contoso/score?metric=secure")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["score"].as_f64().is_some_and(|score| score > 0.0),
        "{body}"
    );
    assert!(
        body["comparisons"].as_array().is_none_or(Vec::is_empty),
        "{body}"
    );
}
