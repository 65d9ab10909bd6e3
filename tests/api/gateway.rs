//! The gateway core against the emulator: `/tenants`, `/tenants/{id}`, `/tenants/{id}/score`,
//! health, docs, error mapping of every fault profile, token reuse and renewal.

use crate::helpers::{
    credential, direct_score, emulator_options, fault, spawn_app, spawn_app_with,
};
use scoregate::emulator::{CredentialKind, EmulatorOptions, FaultProfile};
use std::time::{Duration, Instant};

/// Asserts a problem+json body with `code` and `status`, and returns it.
async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], format!("urn:scoregate:problem:{code}"));
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(!body["title"].as_str().unwrap().is_empty());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

#[tokio::test]
async fn a_healthy_tenants_score_is_what_defender_serves_and_is_then_cached() {
    let app = spawn_app(emulator_options(3, vec![])).await;

    let response = app.get("/tenants/contoso/score").await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["age"], "0");
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_control.starts_with("private, max-age="),
        "{cache_control}"
    );
    let max_age: u64 = cache_control
        .trim_start_matches("private, max-age=")
        .parse()
        .unwrap();
    assert!(
        (250..=300).contains(&max_age),
        "fresh window with jitter: {max_age}"
    );
    let first: serde_json::Value = response.json().await.unwrap();
    assert_eq!(first["tenant"], "contoso");
    assert_eq!(first["source"], "upstream");
    assert_eq!(first["age_seconds"], 0);
    assert!(first.get("warning").is_none());
    let time = first["time"].as_str().unwrap();
    assert_eq!(
        time.split('.').nth(1).map(str::len),
        Some(8),
        "7 digits and Z, kept verbatim: {time}"
    );
    assert!(first["fetched_at"].as_str().unwrap().ends_with('Z'));

    let (status, _, second) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200);
    assert_eq!(second["source"], "cache");
    assert_eq!(second["score"], first["score"]);
    assert_eq!(second["time"], first["time"]);

    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.token_requests, 1);
    assert_eq!(
        stats.score_calls, 1,
        "the second answer came from the cache"
    );
    assert_eq!(stats.responses_2xx, 1);

    // The score is Defender's: ask the emulator directly with the tenant's own credential.
    let direct = direct_score(&app, "contoso").await;
    assert_eq!(first["score"].as_f64().unwrap(), direct);
}

#[tokio::test]
async fn tokens_are_reused_across_calls() {
    let app = spawn_app(emulator_options(2, vec![])).await;
    for _ in 0..5 {
        let (status, _, body) = app.get_json("/tenants/fabrikam/score?max_age=0").await;
        assert_eq!(status, 200);
        assert_eq!(body["source"], "upstream", "max_age=0 forces a call");
    }
    let stats = app.emulator.stats().tenant("fabrikam");
    assert_eq!(stats.score_calls, 5);
    assert_eq!(stats.token_requests, 1, "one token for five calls");
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_call_succeeds() {
    let app = spawn_app(emulator_options(1, vec![])).await;
    assert_eq!(
        app.get("/tenants/contoso/score").await.status().as_u16(),
        200
    );
    // Two hours later by Microsoft's clock, the cached token has expired.
    app.emulator.advance_clock(Duration::from_secs(2 * 3600));
    let (status, _, body) = app.get_json("/tenants/contoso/score?max_age=0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "upstream");
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.token_requests, 2, "renewed once");
    assert_eq!(stats.score_calls, 3, "first call, the 401, the retry");
    assert_eq!(stats.responses_4xx, 1);
}

#[tokio::test]
async fn one_multi_tenant_app_serves_several_tenants() {
    let options = EmulatorOptions {
        tenants: 3,
        credentials: vec![credential(CredentialKind::Shared, &["contoso", "fabrikam"])],
        ..EmulatorOptions::default()
    };
    let app = spawn_app(options).await;
    let registry = app.services.registry();
    let contoso = registry.get("contoso").unwrap();
    let fabrikam = registry.get("fabrikam").unwrap();
    assert_eq!(contoso.client_id, fabrikam.client_id, "one app");
    assert_ne!(contoso.tenant_id, fabrikam.tenant_id, "two tenants");
    for tenant in ["contoso", "fabrikam"] {
        let (status, _, body) = app.get_json(&format!("/tenants/{tenant}/score")).await;
        assert_eq!(status, 200, "{body}");
        let stats = app.emulator.stats().tenant(tenant);
        assert_eq!((stats.token_requests, stats.score_calls), (1, 1));
    }
}

#[tokio::test]
async fn a_certificate_credential_gets_tokens_with_a_signed_assertion() {
    let options = EmulatorOptions {
        tenants: 2,
        credentials: vec![credential(CredentialKind::Certificate, &["fabrikam"])],
        ..EmulatorOptions::default()
    };
    let app = spawn_app(options).await;
    let (status, _, body) = app.get_json("/tenants/fabrikam/score").await;
    assert_eq!(status, 200, "{body}");
    let stats = app.emulator.stats().tenant("fabrikam");
    assert_eq!((stats.tokens_issued, stats.score_calls), (1, 1));
}

#[tokio::test]
async fn a_revoked_secret_is_an_upstream_auth_error_and_defender_is_not_called() {
    let app = spawn_app(emulator_options(
        2,
        vec![fault(FaultProfile::Revoked, &["fabrikam"])],
    ))
    .await;
    let body = assert_problem(
        app.get("/tenants/fabrikam/score").await,
        502,
        "upstream_auth",
    )
    .await;
    assert_eq!(body["tenant"], "fabrikam");
    assert!(
        body["detail"].as_str().unwrap().contains("AADSTS7000215"),
        "{body}"
    );
    let stats = app.emulator.stats().tenant("fabrikam");
    assert_eq!(stats.token_requests, 1, "credential errors are not retried");
    assert_eq!(stats.score_calls, 0);

    // A tenant that keeps failing is not asked again on every request.
    assert_problem(
        app.get("/tenants/fabrikam/score").await,
        502,
        "upstream_auth",
    )
    .await;
    assert_eq!(
        app.emulator.stats().tenant("fabrikam").token_requests,
        1,
        "backing off"
    );
}

#[tokio::test]
async fn a_throttled_tenant_is_503_with_retry_after_and_left_alone_during_the_cool_down() {
    let app = spawn_app(emulator_options(
        2,
        vec![fault(FaultProfile::Throttled, &["contoso"])],
    ))
    .await;
    let response = app.get("/tenants/contoso/score").await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_problem(response, 503, "upstream_throttled").await;
    assert_eq!(
        app.emulator.stats().tenant("contoso").score_calls,
        1,
        "a 429 is not retried"
    );

    let response = app.get("/tenants/contoso/score?max_age=0").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "upstream_throttled").await;
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.score_calls, 1, "nothing is sent during the cool-down");
    assert_eq!(stats.responses_429, 1);
}

#[tokio::test]
async fn a_tenant_failing_every_call_is_retried_then_502() {
    let options = EmulatorOptions {
        flaky_error_share: 1.0,
        ..emulator_options(1, vec![fault(FaultProfile::Flaky, &["contoso"])])
    };
    let app = spawn_app_with(options, &[("SCOREGATE__UPSTREAM__MAX_RETRIES", "2")]).await;
    let body = assert_problem(
        app.get("/tenants/contoso/score").await,
        502,
        "upstream_error",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Defender answered 50"),
        "{body}"
    );
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.score_calls, 3, "one call and two retries");
    assert_eq!(stats.responses_5xx, 3);
    assert_eq!(stats.token_requests, 1);
}

#[tokio::test]
async fn a_flaky_tenant_is_retried_until_it_answers() {
    let options = EmulatorOptions {
        flaky_error_share: 0.5,
        ..emulator_options(1, vec![fault(FaultProfile::Flaky, &["contoso"])])
    };
    let app = spawn_app_with(options, &[("SCOREGATE__UPSTREAM__MAX_RETRIES", "6")]).await;
    let mut successes = 0;
    for _ in 0..4 {
        let response = app.get("/tenants/contoso/score?max_age=0").await;
        if response.status().as_u16() == 200 {
            successes += 1;
        } else {
            // Seven failures in a row at a 50 % share: possible, and then a clean 502.
            assert_problem(response, 502, "upstream_error").await;
        }
    }
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.responses_2xx, successes, "each success is one 2xx");
    assert!(stats.responses_5xx > 0, "the emulator did fail some calls");
    assert_eq!(stats.score_calls, stats.responses_2xx + stats.responses_5xx);
    assert!(
        successes >= 3,
        "retries turned failures into answers ({successes}/4)"
    );
}

#[tokio::test]
async fn a_malformed_answer_is_a_502_and_not_retried() {
    let app = spawn_app(emulator_options(
        1,
        vec![fault(FaultProfile::Malformed, &["contoso"])],
    ))
    .await;
    let body = assert_problem(
        app.get("/tenants/contoso/score").await,
        502,
        "upstream_error",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("unusable"),
        "{body}"
    );
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
}

#[tokio::test]
async fn a_missing_role_is_an_upstream_auth_error_without_retries() {
    let app = spawn_app(emulator_options(
        1,
        vec![fault(FaultProfile::Forbidden, &["contoso"])],
    ))
    .await;
    let body = assert_problem(
        app.get("/tenants/contoso/score").await,
        502,
        "upstream_auth",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("403"), "{body}");
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!((stats.token_requests, stats.score_calls), (1, 1));
}

#[tokio::test]
async fn an_unlicensed_tenant_renews_its_token_once_then_reports_upstream_auth() {
    let app = spawn_app(emulator_options(
        1,
        vec![fault(FaultProfile::Unlicensed, &["contoso"])],
    ))
    .await;
    let body = assert_problem(
        app.get("/tenants/contoso/score").await,
        502,
        "upstream_auth",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("No Tvm license"),
        "{body}"
    );
    let stats = app.emulator.stats().tenant("contoso");
    assert_eq!(stats.token_requests, 2, "one renewal after the first 401");
    assert_eq!(stats.score_calls, 2);
}

#[tokio::test]
async fn a_hanging_tenant_times_out_within_the_deadline() {
    let app = spawn_app_with(
        emulator_options(1, vec![fault(FaultProfile::Hang, &["contoso"])]),
        &[
            ("SCOREGATE__UPSTREAM__TIMEOUT_MS", "800"),
            ("SCOREGATE__UPSTREAM__ATTEMPT_TIMEOUT_MS", "800"),
        ],
    )
    .await;
    let started = Instant::now();
    let response = app.get("/tenants/contoso/score").await;
    let elapsed = started.elapsed();
    assert_problem(response, 504, "upstream_timeout").await;
    assert!(
        elapsed >= Duration::from_millis(700),
        "waited for the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "but not much longer: {elapsed:?}"
    );
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
}

#[tokio::test]
async fn tenants_are_listed_filtered_by_tag_and_shown_with_their_last_fetch() {
    let app = spawn_app(emulator_options(
        6,
        vec![fault(FaultProfile::Revoked, &["litware"])],
    ))
    .await;
    let (status, _, body) = app.get_json("/tenants").await;
    assert_eq!(status, 200);
    let tenants = body["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 6);
    let ids: Vec<&str> = tenants.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sorted by id");
    for tenant in tenants {
        assert_eq!(tenant["cloud"], "custom");
        assert!(tenant["tenant_id"].as_str().unwrap().len() == 36);
        let keys: Vec<&String> = tenant.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["id", "name", "tenant_id", "cloud", "tags", "metrics"]
                    .contains(&k.as_str())),
            "no credential fields: {keys:?}"
        );
    }

    let (_, _, gold) = app.get_json("/tenants?tag=gold").await;
    let gold = gold["tenants"].as_array().unwrap();
    assert!(!gold.is_empty() && gold.len() < 6);
    assert!(gold
        .iter()
        .all(|t| t["tags"].as_array().unwrap().contains(&"gold".into())));
    let (_, _, two) = app.get_json("/tenants?tag=gold&tag=silver").await;
    assert!(
        two["tenants"].as_array().unwrap().len() > gold.len(),
        "tags are repeatable"
    );

    let (status, _, detail) = app.get_json("/tenants/litware").await;
    assert_eq!(status, 200);
    assert!(detail.get("last_fetch").is_none(), "{detail}");
    app.get("/tenants/litware/score").await;
    let (_, _, detail) = app.get_json("/tenants/litware").await;
    assert_eq!(detail["last_fetch"]["outcome"], "upstream_auth", "{detail}");
    assert_eq!(detail["id"], "litware");
}

#[tokio::test]
async fn bad_ids_queries_routes_and_methods_get_problems() {
    let app = spawn_app(emulator_options(1, vec![])).await;
    let unknown = assert_problem(app.get("/tenants/nope/score").await, 404, "unknown_tenant").await;
    let invalid =
        assert_problem(app.get("/tenants/..%2F/score").await, 404, "unknown_tenant").await;
    assert_eq!(unknown["detail"], invalid["detail"]);
    assert!(
        unknown.get("tenant").is_none(),
        "the id asked for is not echoed"
    );
    assert_problem(app.get("/tenants/nope").await, 404, "unknown_tenant").await;
    for query in [
        "max_age=-1",
        "max_age=abc",
        "max_age=1.5",
        "maxage=3",
        "max_age=99999999999999999999",
    ] {
        let body = assert_problem(
            app.get(&format!("/tenants/contoso/score?{query}")).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().starts_with("bad query"),
            "{body}"
        );
    }
    assert_problem(app.get("/tenants?color=red").await, 400, "invalid_request").await;
    assert_problem(app.get("/nope").await, 404, "not_found").await;
    let post = app
        .client
        .post(format!("{}/tenants/contoso/score", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["allow"], "GET");
    assert_problem(post, 405, "method_not_allowed").await;
    assert_eq!(
        app.emulator.stats().total.score_calls,
        0,
        "nothing reached Defender"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app(emulator_options(1, vec![])).await;
    let echoed = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "portal-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "portal-1234");
    let replaced = app
        .client
        .get(format!("{}/tenants/nope", app.address))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).map(|_| ()),
        Ok(()),
        "a fresh uuid: {id}"
    );
    let body: serde_json::Value = replaced.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
}

#[tokio::test]
async fn health_readiness_spec_and_docs_are_served() {
    let app = spawn_app(emulator_options(1, vec![])).await;
    let (status, _, body) = app.get_json("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    for probe in ["/healthz", "/readyz"] {
        let head = app
            .client
            .head(format!("{}{probe}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status().as_u16(), 200, "HEAD {probe}");
    }
    let (status, _, spec) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    // Authentication is off in this app: the served document says so.
    let without_auth: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json_without_auth()).unwrap();
    assert_eq!(spec, without_auth);
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status().as_u16(), 200);
    let html = docs.text().await.unwrap();
    assert!(
        html.contains("swagger"),
        "Swagger UI is served from the binary"
    );
    assert!(!html.contains("cdn."), "no CDN");
}

#[tokio::test]
async fn no_secret_appears_in_any_response_or_log_line() {
    let app = spawn_app(emulator_options(
        4,
        vec![
            fault(FaultProfile::Revoked, &["fabrikam"]),
            fault(FaultProfile::Unlicensed, &["northwind"]),
        ],
    ))
    .await;
    let mut bodies = String::new();
    for path in [
        "/tenants",
        "/tenants/contoso",
        "/tenants/contoso/score",
        "/tenants/fabrikam/score",
        "/tenants/northwind/score",
        "/tenants/fabrikam",
        "/tenants/litware/score?max_age=0",
    ] {
        let response = app.get(path).await;
        bodies.push_str(&format!("{:?}", response.headers()));
        bodies.push_str(&response.text().await.unwrap());
    }
    let logs = crate::helpers::captured_logs();
    assert!(logs.contains("fabrikam"), "the failures were logged");
    for secret in app.secrets() {
        assert!(!bodies.contains(&secret), "a secret in a response");
        assert!(!logs.contains(&secret), "a secret in the logs");
    }
    // Access tokens are JWTs ("eyJ…"): none may be logged or returned.
    assert!(!bodies.contains("eyJ"), "a token in a response");
    assert!(!logs.contains("eyJ"), "a token in the logs");
}

#[tokio::test]
async fn a_reload_retries_a_failing_tenant_at_once_instead_of_after_its_back_off() {
    retried_at_once_after_a_reload(&[]).await;
}

#[tokio::test]
async fn with_redis_a_reload_retries_a_failing_tenant_at_once_too() {
    // The failure back-off is shared in Redis: a reload restarts it there too.
    let redis = crate::cluster::RedisServer::start();
    retried_at_once_after_a_reload(&crate::cluster::replica_env(&redis.url())).await;
}

/// fabrikam's credential is refused, then fixed and the configuration reloaded: the next
/// request asks Entra at once rather than after the back-off.
async fn retried_at_once_after_a_reload(env: &[(&str, &str)]) {
    let app = spawn_app_with(
        emulator_options(2, vec![fault(FaultProfile::Revoked, &["fabrikam"])]),
        env,
    )
    .await;
    assert_problem(
        app.get("/tenants/fabrikam/score").await,
        502,
        "upstream_auth",
    )
    .await;
    // The operator fixes the credential (here: Entra accepts it again) and reloads.
    app.emulator.set_fault("fabrikam", None).unwrap();
    assert_problem(
        app.get("/tenants/fabrikam/score").await,
        502,
        "upstream_auth",
    )
    .await;
    assert_eq!(
        app.emulator.stats().tenant("fabrikam").token_requests,
        1,
        "backing off: not asked again before the reload"
    );
    app.reloader
        .reload()
        .await
        .expect("the same configuration reloads");
    let (status, _, body) = app.get_json("/tenants/fabrikam/score").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "upstream");
    let stats = app.emulator.stats().tenant("fabrikam");
    assert_eq!((stats.token_requests, stats.score_calls), (2, 1));
}
