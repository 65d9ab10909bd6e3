//! Fault profiles: every one, set at start or changed while serving.

use super::{assert_defender_error, client_for, start, wait_for_stats, Harness};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use scoregate::emulator::{EmulatorOptions, FaultProfile, LatencyRange};
use std::time::{Duration, Instant};

async fn with_fault(profile: &str) -> Harness {
    start(EmulatorOptions {
        tenants: 2,
        faults: vec![format!("{profile}=contoso").parse().unwrap()],
        slow_latency: LatencyRange {
            min_ms: 300,
            max_ms: 300,
        },
        ..EmulatorOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_slow_tenant_answers_after_its_latency_and_others_do_not_wait() {
    let app = with_fault("slow").await;
    let slow = app.access_token("contoso").await;
    let fast = app.access_token("fabrikam").await;
    let started = Instant::now();
    assert_eq!(app.score(&slow).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(app.score(&fast).await.status, 200);
    assert_eq!(app.tenant("contoso").tags, vec!["gold", "slow"]);
}

#[tokio::test]
async fn the_global_latency_applies_to_every_score_call() {
    let app = start(EmulatorOptions {
        tenants: 1,
        latency: Some("100..120".parse().unwrap()),
        ..EmulatorOptions::default()
    })
    .await;
    let token = app.access_token("contoso").await;
    let started = Instant::now();
    assert_eq!(app.score(&token).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

/// Status codes of `calls` consecutive score calls of a flaky contoso, seed 11.
async fn flaky_statuses(calls: usize) -> (Vec<u16>, Harness) {
    let app = start(EmulatorOptions {
        tenants: 2,
        seed: 11,
        faults: vec!["flaky=contoso".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;
    let token = app.access_token("contoso").await;
    let mut statuses = Vec::new();
    for _ in 0..calls {
        let answer = app.score(&token).await;
        if answer.status != 200 {
            let code = if answer.status == 500 {
                "InternalServerError"
            } else {
                "ServiceUnavailable"
            };
            assert_defender_error(&answer, answer.status, code);
        }
        statuses.push(answer.status);
    }
    (statuses, app)
}

#[tokio::test]
async fn a_flaky_tenant_fails_half_its_calls_deterministically_from_the_seed() {
    let (first, app) = flaky_statuses(40).await;
    let (second, _) = flaky_statuses(40).await;
    assert_eq!(first, second, "same seed, same call numbers, same outcomes");
    let failures = first.iter().filter(|status| **status >= 500).count();
    assert!((8..=32).contains(&failures), "{first:?}");
    assert!(
        first.iter().all(|s| [200, 500, 503].contains(s)),
        "{first:?}"
    );

    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(counters.responses_5xx as usize, failures);
    assert_eq!(counters.responses_2xx as usize, 40 - failures);
}

#[tokio::test]
async fn a_throttled_tenant_always_gets_429_with_retry_after_but_no_quota_refusal() {
    let app = with_fault("throttled").await;
    let token = app.access_token("contoso").await;
    let answer = app.score(&token).await;
    assert_defender_error(&answer, 429, "TooManyRequests");
    assert_eq!(answer.header("retry-after").as_deref(), Some("30"));
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!((counters.responses_429, counters.quota_refusals), (1, 0));
}

#[tokio::test]
async fn a_forbidden_tenant_gets_tokens_without_the_role_and_403_from_defender() {
    let app = with_fault("forbidden").await;
    let token = app.access_token("contoso").await;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(claims.get("roles").is_none(), "{claims}");
    let answer = app.score(&token).await;
    assert_defender_error(&answer, 403, "Forbidden");
    assert!(answer.body.contains("Missing application roles"));
}

#[tokio::test]
async fn an_unlicensed_tenant_gets_401_no_tvm_license() {
    let app = with_fault("unlicensed").await;
    let token = app.access_token("contoso").await;
    let answer = app.score(&token).await;
    assert_defender_error(&answer, 401, "Unauthorized");
    assert_eq!(answer.json()["error"]["message"], "No Tvm license");
}

#[tokio::test]
async fn a_malformed_tenant_gets_200_with_a_body_that_is_not_json() {
    let app = with_fault("malformed").await;
    let token = app.access_token("contoso").await;
    let answer = app.score(&token).await;
    assert_eq!(answer.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&answer.body).is_err());
    assert_eq!(app.emu.stats().tenant("contoso").responses_2xx, 1);
}

#[tokio::test]
async fn a_hanging_call_is_released_from_the_gauge_when_the_client_gives_up() {
    let app = with_fault("hang").await;
    let token = app.access_token("contoso").await;
    let impatient = client_for(&app.emu, Some(Duration::from_millis(300)));
    let result = impatient
        .get(app.emu.score_url())
        .bearer_auth(&token)
        .send()
        .await;
    assert!(result.is_err_and(|error| error.is_timeout()));
    drop(impatient);

    let stats = wait_for_stats(&app.emu, |stats| stats.total.in_flight == 0).await;
    let counters = stats.tenant("contoso");
    assert_eq!((counters.score_calls, counters.in_flight), (1, 0));
    assert_eq!(counters.max_concurrent, 1);
    // Never answered, so no response class was counted.
    assert_eq!(
        counters.responses_2xx + counters.responses_4xx + counters.responses_5xx,
        0
    );
}

#[tokio::test]
async fn concurrent_hanging_calls_set_the_high_water_mark_and_do_not_block_stop() {
    let app = with_fault("hang").await;
    let token = app.access_token("contoso").await;
    let client = client_for(&app.emu, None);
    let url = app.emu.score_url();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let request = client.get(&url).bearer_auth(&token);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    let stats = wait_for_stats(&app.emu, |stats| stats.total.in_flight == 5).await;
    assert_eq!(stats.tenant("contoso").max_concurrent, 5);
    assert_eq!(stats.total.max_concurrent, 5);

    let Harness { emu, .. } = app;
    tokio::time::timeout(Duration::from_secs(5), emu.stop())
        .await
        .expect("stop does not wait for hanging calls");
    for call in calls {
        let outcome = call.await.expect("the task ends");
        assert!(outcome.is_err(), "a hanging call never gets an answer");
    }
}

#[tokio::test]
async fn a_tenant_goes_healthy_failing_healthy_at_run_time() {
    let app = with_fault("slow").await;
    let token = app.access_token("fabrikam").await;
    assert_eq!(app.score(&token).await.status, 200);

    app.emu
        .set_fault("fabrikam", Some(FaultProfile::Unlicensed))
        .unwrap();
    assert_eq!(app.score(&token).await.status, 401);
    assert_eq!(app.tenant("fabrikam").fault, Some(FaultProfile::Unlicensed));

    // The same through the operator endpoint, by tenant id.
    let tenant_id = app.tenant("fabrikam").tenant_id;
    let url = format!("{}/_emulator/tenants/{tenant_id}/fault", app.emu.base_url());
    let changed = app
        .send(
            app.client
                .post(&url)
                .json(&serde_json::json!({"fault": "flaky"})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(app.tenant("fabrikam").fault, Some(FaultProfile::Flaky));
    let healed = app
        .send(
            app.client
                .post(&url)
                .json(&serde_json::json!({"fault": null})),
        )
        .await;
    assert_eq!(healed.status, 200);
    assert_eq!(app.score(&token).await.status, 200);

    assert!(app.emu.set_fault("nobody", None).is_err());
}
