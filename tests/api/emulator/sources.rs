//! The sources beside the device score: Defender's exposure score, token audiences checked both
//! ways, the `retired` and `graph-forbidden` profiles, and counters per service and audience.

use super::{assert_defender_error, assert_graph_error, start, start_healthy, Harness};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use scoregate::emulator::{Counters, EmulatorOptions, FaultProfile};
use scoregate::wire::{ExposureScore, GRAPH_RESOURCE};
use serde_json::Value;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

async fn exposure_of(app: &Harness, slug: &str) -> ExposureScore {
    let token = app.access_token(slug).await;
    let answer = app.exposure(&token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).expect("Defender's score shape")
}

#[tokio::test]
async fn the_exposure_score_has_defenders_shape_and_is_deterministic_per_seed_and_tenant() {
    let app = start_healthy(3).await;
    let token = app.access_token("contoso").await;
    let answer = app.exposure(&token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
    let body = answer.json();
    assert!(body["@odata.context"]
        .as_str()
        .is_some_and(|context| context.ends_with("#ExposureScore/$entity")));
    let time = body["time"].as_str().expect("a time");
    let fraction = time.split('.').nth(1).expect("fractional seconds");
    assert_eq!(fraction.len(), 8, "7 digits and Z: {time}");
    let score = body["score"].as_f64().expect("a number");
    assert!((0.0..=100.0).contains(&score), "{score}");

    let again = exposure_of(&app, "contoso").await;
    assert_eq!(again.score, score);
    let other = exposure_of(&app, "fabrikam").await;
    assert_ne!(other.score, score);
    let twin = start_healthy(3).await;
    assert_eq!(exposure_of(&twin, "contoso").await.score, score);
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        (
            counters.exposure_calls,
            counters.score_calls,
            counters.defender_calls
        ),
        (2, 0, 2)
    );
}

#[tokio::test]
async fn device_and_exposure_share_defenders_quota_while_graph_keeps_its_own() {
    let app = start(EmulatorOptions {
        tenants: 1,
        quota_per_minute: Some(2),
        ..EmulatorOptions::default()
    })
    .await;
    let defender = app.access_token("contoso").await;
    let graph = app.graph_token("contoso").await;
    assert_eq!(app.score(&defender).await.status, 200);
    assert_eq!(app.exposure(&defender).await.status, 200);
    for answer in [app.score(&defender).await, app.exposure(&defender).await] {
        assert_defender_error(&answer, 429, "TooManyRequests");
        assert!(answer.header("retry-after").is_some());
    }
    assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);

    let counters = app.emu.stats().tenant("contoso");
    assert_eq!((counters.quota_refusals, counters.responses_429), (2, 2));
    assert_eq!((counters.graph_calls, counters.graph_responses_2xx), (1, 1));
    assert_eq!(counters.graph_quota_refusals, 0);
}

#[tokio::test]
async fn the_scope_chooses_the_audience_and_its_role() {
    let app = start_healthy(1).await;
    let defender = claims(&app.access_token("contoso").await);
    assert_eq!(defender["aud"], scoregate::wire::DEFENDER_RESOURCE);
    assert_eq!(defender["roles"], serde_json::json!(["Score.Read.All"]));
    let graph = claims(&app.graph_token("contoso").await);
    assert_eq!(graph["aud"], GRAPH_RESOURCE);
    assert_eq!(
        graph["roles"],
        serde_json::json!(["SecurityEvents.Read.All"])
    );
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        (
            counters.defender_token_requests,
            counters.defender_tokens_issued,
            counters.graph_token_requests,
            counters.graph_tokens_issued,
            counters.tokens_issued
        ),
        (1, 1, 1, 1, 2)
    );
}

#[tokio::test]
async fn a_wrong_audience_token_is_refused_by_defender_and_by_graph() {
    let app = start_healthy(1).await;
    let defender = app.access_token("contoso").await;
    let graph = app.graph_token("contoso").await;

    // Defender refuses a Graph token (a wrong audience) with 403, not 401, and Defender's body.
    for answer in [app.score(&graph).await, app.exposure(&graph).await] {
        assert_defender_error(&answer, 403, "Forbidden");
        assert!(answer.body.contains("audience"), "{}", answer.body);
    }
    // Graph refuses a Defender token: 401 with Graph's body.
    let answer = app.secure_scores(&defender, "").await;
    assert_graph_error(&answer, 401, "InvalidAuthenticationToken");
    assert!(answer.body.contains("Invalid audience"), "{}", answer.body);
    assert!(answer.header("www-authenticate").is_some());
    // And a missing or foreign token.
    let bare = app.send(app.client.get(app.emu.secure_scores_url())).await;
    assert_graph_error(&bare, 401, "InvalidAuthenticationToken");
    assert_graph_error(
        &app.secure_scores("garbage", "").await,
        401,
        "InvalidAuthenticationToken",
    );

    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(
        (counters.responses_4xx, counters.graph_responses_4xx),
        (2, 1)
    );
    assert_eq!(counters.responses_2xx + counters.graph_responses_2xx, 0);
    assert_eq!(app.emu.stats().total.graph_calls, 3);
}

#[tokio::test]
async fn a_retired_tenant_gets_410_from_defender_while_graph_keeps_working() {
    let app = start(EmulatorOptions {
        tenants: 2,
        faults: vec!["retired=contoso".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    assert_eq!(app.tenant("contoso").tags, vec!["gold", "retired"]);
    let defender = app.access_token("contoso").await;
    for answer in [app.score(&defender).await, app.exposure(&defender).await] {
        assert_defender_error(&answer, 410, "Gone");
    }
    let graph = app.graph_token("contoso").await;
    assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);
    // Other tenants are not retired.
    let fabrikam = app.access_token("fabrikam").await;
    assert_eq!(app.score(&fabrikam).await.status, 200);

    // Set at run time through the operator endpoint, and lifted again.
    let url = format!("{}/_emulator/tenants/fabrikam/fault", app.emu.base_url());
    let set = app
        .send(
            app.client
                .post(&url)
                .json(&serde_json::json!({"fault": "retired"})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_defender_error(&app.exposure(&fabrikam).await, 410, "Gone");
    app.emu.set_fault("fabrikam", None).unwrap();
    assert_eq!(app.exposure(&fabrikam).await.status, 200);

    let counters = app.emu.stats().tenant("contoso");
    assert_eq!((counters.defender_calls, counters.responses_4xx), (2, 2));
    assert_eq!(counters.graph_responses_2xx, 1);
}

#[tokio::test]
async fn a_missing_role_hits_only_the_service_it_belongs_to() {
    let app = start(EmulatorOptions {
        tenants: 2,
        faults: vec![
            "forbidden=contoso".parse().unwrap(),
            "graph-forbidden=fabrikam".parse().unwrap(),
        ],
        ..EmulatorOptions::default()
    })
    .await;
    // contoso: no Defender role, Graph fine.
    let token = app.access_token("contoso").await;
    assert!(claims(&token).get("roles").is_none());
    assert_defender_error(&app.exposure(&token).await, 403, "Forbidden");
    let graph = app.graph_token("contoso").await;
    assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);
    // fabrikam: Defender fine, no Graph role.
    let token = app.access_token("fabrikam").await;
    assert_eq!(app.exposure(&token).await.status, 200);
    let graph = app.graph_token("fabrikam").await;
    assert!(claims(&graph).get("roles").is_none());
    let answer = app.secure_scores(&graph, "?$top=1").await;
    assert_graph_error(&answer, 403, "Forbidden");
    assert!(answer.body.contains("SecurityEvents.Read.All"));
    assert_eq!(
        "graph-forbidden".parse::<FaultProfile>(),
        Ok(FaultProfile::GraphForbidden)
    );
}

#[tokio::test]
async fn counters_are_kept_per_service_per_tenant_and_in_total() {
    let app = start_healthy(2).await;
    let defender = app.access_token("contoso").await;
    let graph = app.graph_token("contoso").await;
    for _ in 0..2 {
        assert_eq!(app.score(&defender).await.status, 200);
    }
    assert_eq!(app.exposure(&defender).await.status, 200);
    for _ in 0..3 {
        assert_eq!(app.secure_scores(&graph, "?$top=1").await.status, 200);
    }
    let stats = app.emu.stats();
    let expected = Counters {
        token_requests: 2,
        tokens_issued: 2,
        defender_token_requests: 1,
        defender_tokens_issued: 1,
        graph_token_requests: 1,
        graph_tokens_issued: 1,
        score_calls: 2,
        exposure_calls: 1,
        defender_calls: 3,
        responses_2xx: 3,
        max_concurrent: 1,
        graph_calls: 3,
        graph_responses_2xx: 3,
        graph_max_concurrent: 1,
        ..Counters::default()
    };
    assert_eq!(stats.tenant("contoso"), expected);
    assert_eq!(stats.total, expected);
    // The operator endpoint serves the same names.
    let url = format!("{}/_emulator/stats", app.emu.base_url());
    let served = app.send(app.client.get(url)).await.json();
    assert_eq!(served["tenants"]["contoso"]["graph_calls"], 3);
    assert_eq!(served["tenants"]["contoso"]["exposure_calls"], 1);
    assert_eq!(served["total"]["defender_calls"], 3);
}
