//! The counters the gateway's tests assert on: exact after known traffic, per tenant and in
//! total, through the library and the operator endpoint, and reset.

use super::{start, start_healthy};
use scoregate::emulator::{Counters, EmulatorOptions, StatsSnapshot};

#[tokio::test]
async fn counters_are_exact_after_known_traffic_and_zero_after_reset() {
    let app = start(EmulatorOptions {
        tenants: 3,
        faults: vec!["unlicensed=northwind".parse().unwrap()],
        ..EmulatorOptions::default()
    })
    .await;

    // contoso: one good token, one bad secret, three scores.
    let contoso = app.access_token("contoso").await;
    let mut wrong = app.tenant("contoso");
    wrong.credential = scoregate::emulator::TenantCredential::Secret("wrong".to_owned().into());
    assert_eq!(app.secret_token_request(&wrong).await.status, 401);
    for _ in 0..3 {
        assert_eq!(app.score(&contoso).await.status, 200);
    }
    // northwind: one token, one 401 (unlicensed).
    let northwind = app.access_token("northwind").await;
    assert_eq!(app.score(&northwind).await.status, 401);
    // Nobody's: a garbage token and a missing header (total only).
    assert_eq!(app.score("garbage").await.status, 401);
    assert_eq!(app.get_score(None).await.status, 401);

    let stats = app.emu.stats();
    assert_eq!(
        stats.tenant("contoso"),
        Counters {
            token_requests: 2,
            tokens_issued: 1,
            token_errors: 1,
            defender_token_requests: 2,
            defender_tokens_issued: 1,
            score_calls: 3,
            defender_calls: 3,
            responses_2xx: 3,
            max_concurrent: 1,
            ..Counters::default()
        }
    );
    assert_eq!(
        stats.tenant("northwind"),
        Counters {
            token_requests: 1,
            tokens_issued: 1,
            defender_token_requests: 1,
            defender_tokens_issued: 1,
            score_calls: 1,
            defender_calls: 1,
            responses_4xx: 1,
            max_concurrent: 1,
            ..Counters::default()
        }
    );
    assert_eq!(stats.tenant("fabrikam"), Counters::default());
    assert!(
        !stats.tenants.contains_key("fabrikam"),
        "idle tenants are left out"
    );
    assert_eq!(
        stats.total,
        Counters {
            token_requests: 3,
            tokens_issued: 2,
            token_errors: 1,
            defender_token_requests: 3,
            defender_tokens_issued: 2,
            score_calls: 6,
            defender_calls: 6,
            responses_2xx: 3,
            responses_4xx: 3,
            max_concurrent: 1,
            ..Counters::default()
        }
    );

    // The operator endpoint says the same.
    let url = format!("{}/_emulator/stats", app.emu.base_url());
    let served: StatsSnapshot = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, stats);

    app.emu.reset_stats();
    assert_eq!(app.emu.stats(), StatsSnapshot::default());

    // And the reset endpoint.
    assert_eq!(app.score(&contoso).await.status, 200);
    let reset = format!("{}/_emulator/reset", app.emu.base_url());
    assert_eq!(app.client.post(&reset).send().await.unwrap().status(), 204);
    assert_eq!(app.emu.stats(), StatsSnapshot::default());
}

#[tokio::test]
async fn the_tenant_listing_shows_tenants_without_secrets() {
    let app = start_healthy(3).await;
    let url = format!("{}/_emulator/tenants", app.emu.base_url());
    let answer = app.send(app.client.get(&url)).await;
    assert_eq!(answer.status, 200);
    let listing = answer.json();
    assert_eq!(listing.as_array().map(Vec::len), Some(3));
    assert_eq!(listing[0]["slug"], "contoso");
    assert_eq!(listing[0]["credential"], "secret");
    for tenant in app.emu.tenants() {
        assert!(!answer.body.contains(&super::secret_of(&tenant)));
    }
}
