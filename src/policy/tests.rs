use super::testing::{
    outbound, outbound_over, registration, tenant, Answer, FakeSource, FakeTokens, DEFENDER_LIMITS,
};
use super::*;
use crate::tenants::QuotaLimits;
use crate::upstream::UpstreamService;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

fn status(status: u16, retry_after: Option<u64>) -> Failure {
    Failure::Call(CallFailure::Status {
        status,
        retry_after: retry_after.map(Duration::from_secs),
        detail: format!("Defender answered {status}"),
    })
}

fn reading() -> Reading {
    Reading {
        score: 42.0,
        time: "t".to_owned(),
        fetched_at: SystemTime::UNIX_EPOCH,
        secure: None,
    }
}

/// The tenant's device score through `stack`, with the stack's own deadline.
async fn fetch_device(stack: &Outbound, tenant: &Arc<Tenant>) -> Result<Reading, FetchError> {
    stack.fetch(tenant, Metric::Device, stack.deadline()).await
}

/// The decision's kind and, for failures, the gateway's error code.
fn kind(decision: &Decision) -> String {
    match decision {
        Decision::Done(_) => "done".to_owned(),
        Decision::Retry(_) => "retry".to_owned(),
        Decision::RenewToken(_) => "renew".to_owned(),
        Decision::Fail(error) => format!("fail {}", error.code()),
        Decision::CoolDown(wait) => format!("cool down {} s", wait.as_secs()),
    }
}

#[test]
fn every_outcome_is_classified_into_one_decision() {
    let token = |error: TokenError| Failure::Token(error);
    let table: Vec<(Result<Reading, Failure>, bool, &str)> = vec![
        (Ok(reading()), false, "done"),
        (Err(status(500, None)), false, "retry"),
        (Err(status(503, Some(5))), false, "retry"),
        (Err(status(401, None)), false, "renew"),
        (Err(status(401, None)), true, "fail upstream_auth"),
        (Err(status(403, None)), false, "fail upstream_auth"),
        (Err(status(429, Some(30))), false, "cool down 30 s"),
        (Err(status(429, None)), false, "cool down 60 s"),
        (Err(status(400, None)), false, "fail upstream_error"),
        (Err(status(404, None)), false, "fail upstream_gone"),
        (Err(status(410, None)), false, "fail upstream_gone"),
        (
            Err(Failure::Call(CallFailure::Transport {
                detail: "reset".to_owned(),
            })),
            false,
            "retry",
        ),
        (
            Err(Failure::Call(CallFailure::Unusable {
                detail: "not json".to_owned(),
            })),
            false,
            "fail upstream_error",
        ),
        (
            Err(Failure::AttemptTimeout {
                deadline_reached: false,
            }),
            false,
            "retry",
        ),
        (
            Err(Failure::AttemptTimeout {
                deadline_reached: true,
            }),
            false,
            "fail upstream_timeout",
        ),
        (
            Err(token(TokenError::Rejected {
                status: 401,
                codes: "AADSTS7000215".to_owned(),
                detail: "bad secret".to_owned(),
            })),
            false,
            "fail upstream_auth",
        ),
        (
            Err(token(TokenError::Invalid {
                detail: "bad tenant".to_owned(),
            })),
            false,
            "fail upstream_auth",
        ),
        (
            Err(token(TokenError::Unavailable {
                detail: "503".to_owned(),
            })),
            false,
            "retry",
        ),
    ];
    for (outcome, renewed, expected) in table {
        let described = format!("{outcome:?} (renewed: {renewed})");
        assert_eq!(
            kind(&classify(outcome, renewed, UpstreamService::Defender)),
            expected,
            "{described}"
        );
    }
}

#[test]
fn failures_of_a_graph_call_name_graph_not_defender() {
    let late = classify::<Reading>(
        Err(Failure::AttemptTimeout {
            deadline_reached: false,
        }),
        false,
        UpstreamService::Graph,
    );
    assert!(
        matches!(&late, Decision::Retry(detail) if detail == "Microsoft Graph did not answer in time"),
        "{late:?}"
    );
    let last = classify::<Reading>(
        Err(Failure::AttemptTimeout {
            deadline_reached: true,
        }),
        false,
        UpstreamService::Graph,
    );
    assert!(
        matches!(
            last,
            Decision::Fail(UpstreamError::Timeout {
                service: UpstreamService::Graph
            })
        ),
        "{last:?}"
    );
    let unusable = classify::<Reading>(
        Err(Failure::Call(CallFailure::Unusable {
            detail: "not json".to_owned(),
        })),
        false,
        UpstreamService::Graph,
    );
    assert!(
        matches!(
            unusable,
            Decision::Fail(UpstreamError::Failed {
                service: UpstreamService::Graph,
                ..
            })
        ),
        "{unusable:?}"
    );
}

#[test]
fn a_denial_keeps_its_status_and_detail() {
    assert!(matches!(
        classify::<Reading>(Err(status(403, None)), false, UpstreamService::Defender),
        Decision::Fail(UpstreamError::Denied { status: 403, detail }) if detail == "Defender answered 403"
    ));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_each_charging_the_quota() {
    let source = FakeSource::new(42.0, Duration::from_millis(10));
    let server_error = || Answer::status(503, None, "busy");
    source.script("contoso", [server_error(), server_error()]);
    let stack = outbound(source.clone(), Arc::default(), 4);
    // Three a minute: the first attempt and two retries spend the sliding minute.
    let contoso = tenant(
        "contoso",
        QuotaLimits {
            per_minute: 3,
            per_hour: 1000,
        },
    );
    let reading = fetch_device(&stack, &contoso).await.unwrap();
    assert_eq!(reading.score, 42.0);
    assert_eq!(source.calls("contoso"), 3);
    assert_eq!(
        stack.consecutive_failures(&contoso, Metric::Device).await,
        0
    );
    // The next fetch must wait for the minute window: longer than the fetch deadline allows.
    let error = stack
        .fetch(
            &contoso,
            Metric::Device,
            instant_after(Instant::now(), Duration::from_secs(1)),
        )
        .await;
    assert!(
        matches!(
            error,
            Err(FetchError::Upstream(UpstreamError::Throttled { .. }))
        ),
        "{error:?}"
    );
    assert_eq!(source.calls("contoso"), 3, "a refused charge makes no call");
}

#[tokio::test(start_paused = true)]
async fn spent_retries_fail_the_fetch_and_start_the_back_off() {
    let source = FakeSource::new(42.0, Duration::ZERO);
    source.answer(Answer::Fail(CallFailure::Transport {
        detail: "connection reset".to_owned(),
    }));
    let stack = outbound(source.clone(), Arc::default(), 4);
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    let error = fetch_device(&stack, &contoso).await.unwrap_err();
    assert!(
        matches!(&error, FetchError::Upstream(UpstreamError::Failed { detail, .. }) if detail == "connection reset"),
        "{error:?}"
    );
    assert_eq!(source.calls("contoso"), 3, "one attempt and two retries");
    assert_eq!(
        stack.consecutive_failures(&contoso, Metric::Device).await,
        1
    );
    // The gate now refuses for the first back-off pause (5 s), without calling.
    assert!(matches!(
        stack.gate(&contoso, Metric::Device).await,
        Err(Gated::BackOff(_))
    ));
    let refused = fetch_device(&stack, &contoso).await.unwrap_err();
    assert!(matches!(refused, FetchError::Gated(Gated::BackOff(_))));
    assert_eq!(source.calls("contoso"), 3);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(stack.gate(&contoso, Metric::Device).await.is_ok());
    source.answer(Answer::Score(7.0));
    assert_eq!(fetch_device(&stack, &contoso).await.unwrap().score, 7.0);
    assert_eq!(
        stack.consecutive_failures(&contoso, Metric::Device).await,
        0,
        "a success ends the back-off"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_cools_the_tenant_down_without_counting_as_a_failure() {
    let source = FakeSource::new(42.0, Duration::ZERO);
    source.script(
        "contoso",
        [Answer::status(
            429,
            Some(Duration::from_secs(30)),
            "slow down",
        )],
    );
    let stack = outbound(source.clone(), Arc::default(), 4);
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    let error = fetch_device(&stack, &contoso).await.unwrap_err();
    assert!(matches!(
        error,
        FetchError::Upstream(UpstreamError::Throttled { retry_after, .. }) if retry_after == Duration::from_secs(30)
    ));
    assert_eq!(source.calls("contoso"), 1, "a 429 is not retried");
    assert_eq!(
        stack.consecutive_failures(&contoso, Metric::Device).await,
        0
    );
    assert_eq!(stack.tenants_cooling_down(), 1);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(
        stack.gate(&contoso, Metric::Device).await.err(),
        Some(Gated::CoolDown(Duration::from_secs(1)))
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(fetch_device(&stack, &contoso).await.unwrap().score, 42.0);
}

#[tokio::test(start_paused = true)]
async fn a_401_renews_the_token_once_and_a_second_one_is_final() {
    let source = FakeSource::new(42.0, Duration::ZERO);
    let unauthorized = || Answer::status(401, None, "expired");
    source.script("contoso", [unauthorized(), unauthorized()]);
    let tokens = Arc::new(FakeTokens::default());
    let stack = outbound(source.clone(), tokens.clone(), 4);
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    let error = fetch_device(&stack, &contoso).await.unwrap_err();
    assert!(matches!(
        error,
        FetchError::Upstream(UpstreamError::Denied { status: 401, .. })
    ));
    assert_eq!(
        (
            source.calls("contoso"),
            tokens.renewals.load(Ordering::SeqCst)
        ),
        (2, 1)
    );
    // A 401 that a renewal cures is a success.
    tokio::time::advance(Duration::from_secs(5)).await;
    source.script("contoso", [unauthorized()]);
    assert!(fetch_device(&stack, &contoso).await.is_ok());
    assert_eq!(tokens.renewals.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_fail_at_once_without_a_call() {
    let source = FakeSource::new(42.0, Duration::ZERO);
    let tokens = Arc::new(FakeTokens::default());
    *tokens.reject.lock() = Some("invalid client secret".to_owned());
    let stack = outbound(source.clone(), tokens, 4);
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    let error = fetch_device(&stack, &contoso).await.unwrap_err();
    assert!(matches!(
        error,
        FetchError::Upstream(UpstreamError::Credentials { .. })
    ));
    assert_eq!(source.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_is_retried_after_the_attempt_timeout_then_times_out_at_the_deadline() {
    let source = FakeSource::new(42.0, Duration::from_secs(60));
    let stack = outbound(source.clone(), Arc::default(), 4);
    let contoso = tenant("contoso", DEFENDER_LIMITS);
    let started = Instant::now();
    let error = fetch_device(&stack, &contoso).await.unwrap_err();
    // Attempts of 5 s in a 10 s deadline: the second one ends at the deadline, which is final.
    assert!(
        matches!(error, FetchError::Upstream(UpstreamError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(source.calls("contoso"), 2);
    assert!(started.elapsed() <= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_cap_bounds_calls_at_once_and_frees_its_slots() {
    let source = FakeSource::new(42.0, Duration::from_secs(1));
    let stack = outbound(source.clone(), Arc::default(), 2);
    let tenants: Vec<_> = (0..5)
        .map(|i| tenant(&format!("tenant-{i}"), DEFENDER_LIMITS))
        .collect();
    let fetches = tenants
        .iter()
        .map(|t| stack.fetch(t, Metric::Device, stack.deadline()));
    let watch = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (
            stack.in_flight_cap().in_flight(),
            stack.in_flight_cap().spare(),
        )
    };
    let (results, during) = tokio::join!(futures::future::join_all(fetches), watch);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(during, (2, 0));
    assert_eq!(source.max_running(), 2);
    assert_eq!(stack.in_flight_cap().in_flight(), 0);
    assert_eq!(stack.in_flight_cap().max(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_slot_before_the_deadline_is_a_timeout() {
    let source = FakeSource::new(42.0, Duration::from_secs(3));
    let stack = outbound(source.clone(), Arc::default(), 1);
    let (a, b) = (tenant("a", DEFENDER_LIMITS), tenant("b", DEFENDER_LIMITS));
    let slow = stack.fetch(&a, Metric::Device, stack.deadline());
    let hurried = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        stack
            .fetch(
                &b,
                Metric::Device,
                instant_after(Instant::now(), Duration::from_secs(1)),
            )
            .await
    };
    let (slow, hurried) = tokio::join!(slow, hurried);
    assert!(slow.is_ok());
    assert!(matches!(
        hurried,
        Err(FetchError::Upstream(UpstreamError::Timeout { .. }))
    ));
    assert_eq!(source.calls("b"), 0);
}

#[test]
fn retry_pauses_are_jittered_below_a_doubling_capped_ceiling() {
    let retries = Retries {
        max_retries: 10,
        base: Duration::from_millis(100),
        max: Duration::from_millis(350),
    };
    for (retry, ceiling) in [(1, 100), (2, 200), (3, 350), (9, 350)] {
        let pauses: Vec<Duration> = (0..200).map(|_| retries.pause(retry)).collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(ceiling)));
        assert!(
            pauses.iter().any(|p| *p != pauses[0]),
            "retry {retry}: pauses are random"
        );
    }
}

/// A tenant with every metric and the given Defender limits and Graph settings.
fn every_metric(
    id: &str,
    quota: QuotaLimits,
    graph_per_minute: u32,
    graph_max: u32,
) -> Arc<Tenant> {
    let mut tenant = registration(id, quota);
    tenant.metrics = Metric::ALL.to_vec();
    tenant.endpoints = crate::tenants::test_endpoints(quota, graph_per_minute, graph_max);
    Arc::new(tenant)
}

#[tokio::test(start_paused = true)]
async fn a_gone_endpoint_is_called_once_names_the_other_metrics_and_is_left_alone_for_an_hour() {
    let device = FakeSource::for_metric(Metric::Device, 340.0, Duration::ZERO);
    let exposure = FakeSource::for_metric(Metric::Exposure, 31.0, Duration::ZERO);
    let secure = FakeSource::for_metric(Metric::Secure, 420.0, Duration::ZERO);
    device.answer(Answer::status(
        410,
        None,
        "Defender answered 410 Gone: retired",
    ));
    let stack = outbound_over(
        vec![device.clone(), exposure.clone(), secure.clone()],
        Arc::default(),
        4,
    );
    let contoso = every_metric("contoso", DEFENDER_LIMITS, 150, 4);
    let error = fetch_device(&stack, &contoso).await.unwrap_err();
    let FetchError::Upstream(UpstreamError::Gone { detail }) = &error else {
        panic!("{error:?}");
    };
    assert!(detail.contains("410"), "{detail}");
    assert!(
        detail.contains("exposure, secure (use metric=secure)"),
        "{detail}"
    );
    assert_eq!(device.calls("contoso"), 1, "not retried");
    // Backed off for an hour, not for the short exponential pause.
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert!(matches!(
        stack.gate(&contoso, Metric::Device).await,
        Err(Gated::BackOff(_))
    ));
    // The other metrics, even of the same service, are not held back by it.
    assert!(stack
        .fetch(&contoso, Metric::Exposure, stack.deadline())
        .await
        .is_ok());
    assert!(stack
        .fetch(&contoso, Metric::Secure, stack.deadline())
        .await
        .is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(stack.gate(&contoso, Metric::Device).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn device_and_exposure_share_defenders_window_and_graph_has_its_own() {
    let device = FakeSource::for_metric(Metric::Device, 340.0, Duration::ZERO);
    let exposure = FakeSource::for_metric(Metric::Exposure, 31.0, Duration::ZERO);
    let secure = FakeSource::for_metric(Metric::Secure, 420.0, Duration::ZERO);
    let stack = outbound_over(
        vec![device.clone(), exposure.clone(), secure.clone()],
        Arc::default(),
        4,
    );
    // One a minute: no sliding minute holds more.
    let limits = QuotaLimits {
        per_minute: 1,
        per_hour: 1500,
    };
    let contoso = every_metric("contoso", limits, 1, 4);
    // A deadline shorter than any wait for the window: a spent window refuses at once.
    let soon = || instant_after(Instant::now(), Duration::from_millis(100));
    assert!(stack.fetch(&contoso, Metric::Device, soon()).await.is_ok());
    let refused = stack.fetch(&contoso, Metric::Exposure, soon()).await;
    assert!(
        matches!(
            refused,
            Err(FetchError::Upstream(UpstreamError::Throttled { .. }))
        ),
        "the device call spent the Defender window exposure needs: {refused:?}"
    );
    assert_eq!(exposure.calls("contoso"), 0);
    // Graph's window is its own: untouched by Defender's calls, and spent by its own.
    assert!(stack.fetch(&contoso, Metric::Secure, soon()).await.is_ok());
    assert!(stack.fetch(&contoso, Metric::Secure, soon()).await.is_err());
    assert_eq!(secure.calls("contoso"), 1);
    // A minute later Defender's window has room again, for either metric.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(stack
        .fetch(&contoso, Metric::Exposure, soon())
        .await
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn graph_calls_of_one_tenant_never_exceed_its_concurrency_cap() {
    let secure = FakeSource::for_metric(Metric::Secure, 420.0, Duration::from_secs(1));
    let stack = outbound_over(vec![secure.clone()], Arc::default(), 64);
    let contoso = every_metric("contoso", DEFENDER_LIMITS, 150, 2);
    let fabrikam = every_metric("fabrikam", DEFENDER_LIMITS, 150, 2);
    let fetches = (0..5).map(|_| stack.fetch(&contoso, Metric::Secure, stack.deadline()));
    let other = stack.fetch(&fabrikam, Metric::Secure, stack.deadline());
    let watch = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.in_flight_cap().in_flight()
    };
    let (results, other, during) = tokio::join!(futures::future::join_all(fetches), other, watch);
    assert!(results.iter().all(Result::is_ok));
    assert!(other.is_ok());
    assert_eq!(during, 3, "two of contoso's calls and fabrikam's one");
    assert_eq!(secure.calls("contoso"), 5);
    assert_eq!(secure.max_running(), 3);
}
