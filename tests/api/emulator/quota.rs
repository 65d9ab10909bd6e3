//! Defender's limits: 100 calls per minute and 1,500 per hour per (application, tenant), on the
//! emulator clock, with 429 `TooManyRequests` and `Retry-After`.

use super::{assert_defender_error, start, start_healthy};
use scoregate::emulator::EmulatorOptions;
use std::time::Duration;

#[tokio::test]
async fn the_101st_call_in_a_minute_is_a_429_with_a_sane_retry_after() {
    let app = start_healthy(2).await;
    let contoso = app.access_token("contoso").await;
    let fabrikam = app.access_token("fabrikam").await;

    let calls = (0..100).map(|_| app.score(&contoso));
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|answer| answer.status == 200));

    let refused = app.score(&contoso).await;
    assert_defender_error(&refused, 429, "TooManyRequests");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // Another tenant is unaffected.
    assert_eq!(app.score(&fabrikam).await.status, 200);

    // A refused call consumes nothing: still refused, and counted once each.
    assert_eq!(app.score(&contoso).await.status, 429);
    let counters = app.emu.stats().tenant("contoso");
    assert_eq!(counters.score_calls, 102);
    assert_eq!(counters.responses_2xx, 100);
    assert_eq!(counters.responses_429, 2);
    assert_eq!(counters.quota_refusals, 2);
    assert_eq!(counters.responses_4xx, 0);

    // Once the minute has passed on the emulator clock, calls succeed again.
    app.emu.advance_clock(Duration::from_secs(retry_after));
    assert_eq!(app.score(&contoso).await.status, 200);
}

#[tokio::test]
async fn the_hour_limit_holds_when_every_minute_is_within_its_limit() {
    let app = start(EmulatorOptions {
        tenants: 1,
        quota_per_minute: Some(5),
        quota_per_hour: Some(8),
        ..EmulatorOptions::default()
    })
    .await;
    let token = app.access_token("contoso").await;
    for _ in 0..5 {
        assert_eq!(app.score(&token).await.status, 200);
    }
    let minute = app.score(&token).await;
    assert_eq!(minute.status, 429);
    let wait: u64 = minute.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    app.emu.advance_clock(Duration::from_secs(61));
    for _ in 0..3 {
        assert_eq!(app.score(&token).await.status, 200);
    }
    let hour = app.score(&token).await;
    assert_defender_error(&hour, 429, "TooManyRequests");
    let wait: u64 = hour.header("retry-after").unwrap().parse().unwrap();
    // The first call leaves the hour window 3,600 s after it was made, 61 s ago.
    assert!((3_400..=3_540).contains(&wait), "{wait}");

    app.emu.advance_clock(Duration::from_secs(wait));
    // An hour has passed: the old token has expired too.
    let token = app.access_token("contoso").await;
    assert_eq!(app.score(&token).await.status, 200);
    assert_eq!(app.emu.stats().tenant("contoso").quota_refusals, 2);
}

#[tokio::test]
async fn quotas_can_be_switched_off_for_benchmarks() {
    let app = start(EmulatorOptions {
        tenants: 1,
        quota_per_minute: None,
        quota_per_hour: None,
        ..EmulatorOptions::default()
    })
    .await;
    let token = app.access_token("contoso").await;
    let answers = futures::future::join_all((0..150).map(|_| app.score(&token))).await;
    assert!(answers.iter().all(|answer| answer.status == 200));
}
