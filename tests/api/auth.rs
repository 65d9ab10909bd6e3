//! Callers: API keys scoped to tenants, tenant isolation, per-key rate limits, hardening.
//!
//! A matrix over keys × routes asserts exactly what each caller can see, and that a tenant
//! outside a key's scope is indistinguishable from one that does not exist.

use crate::helpers::{captured_logs, emulator_options, spawn_app_with_config, TestApp};
use scoregate::auth::generate_key;
use std::collections::BTreeSet;

/// Keys of the matrix: (name, key).
struct Keys {
    contoso: String,
    gold: String,
    all: String,
    slow: String,
}

/// Six tenants: contoso, litware are gold; fabrikam, adatum silver; northwind, tailspin bronze.
async fn spawn_with_keys() -> (TestApp, Keys) {
    let (contoso, contoso_digest) = generate_key().unwrap();
    let (gold, gold_digest) = generate_key().unwrap();
    let (all, all_digest) = generate_key().unwrap();
    let (slow, slow_digest) = generate_key().unwrap();
    let keys_toml = format!(
        "[[api_keys]]\nname = \"contoso-portal\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"gold-dashboard\"\nsha256 = \"{gold_digest}\"\ntags = [\"gold\"]\n\n\
         [[api_keys]]\nname = \"operator\"\nsha256 = \"{all_digest}\"\ntenants = [\"*\"]\noperator = true\n\n\
         [[api_keys]]\nname = \"greedy\"\nsha256 = \"{slow_digest}\"\ntenants = [\"*\"]\nrequests_per_minute = 3\n"
    );
    let app = spawn_app_with_config(
        emulator_options(6, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true")],
        &keys_toml,
    )
    .await;
    (
        app,
        Keys {
            contoso,
            gold,
            all,
            slow,
        },
    )
}

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}{path}", app.address));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn visible_tenants(app: &TestApp, key: &str) -> BTreeSet<String> {
    let response = get(app, "/tenants", Some(key)).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

#[tokio::test]
async fn each_key_sees_exactly_its_tenants_on_every_route() {
    let (app, keys) = spawn_with_keys().await;
    let everyone = set(&[
        "adatum",
        "contoso",
        "fabrikam",
        "litware",
        "northwind",
        "tailspin",
    ]);
    let cases = [
        (&keys.contoso, set(&["contoso"])),
        (&keys.gold, set(&["contoso", "litware"])),
        (&keys.all, everyone.clone()),
    ];
    for (key, visible) in &cases {
        assert_eq!(&visible_tenants(&app, key).await, visible);
        for tenant in &everyone {
            for route in [
                format!("/tenants/{tenant}"),
                format!("/tenants/{tenant}/score"),
            ] {
                let response = get(&app, &route, Some(key)).await;
                let expected = if visible.contains(tenant) { 200 } else { 404 };
                assert_eq!(response.status().as_u16(), expected, "{route}");
            }
        }
    }
    for (key, visible) in &cases {
        // /scores: items, summary, CSV rows and every page hold exactly the visible tenants.
        let response = get(&app, "/scores?limit=1000", Some(key)).await;
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        let items: BTreeSet<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["tenant"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&items, visible);
        assert_eq!(body["summary"]["tenants"], visible.len());
        let csv = get(&app, "/scores?format=csv", Some(key))
            .await
            .text()
            .await
            .unwrap();
        let rows: BTreeSet<String> = csv
            .lines()
            .skip(1)
            .map(|row| row.split(',').next().unwrap().to_owned())
            .collect();
        assert_eq!(&rows, visible);
        let mut paged = Vec::new();
        let mut path = "/scores?limit=1".to_owned();
        loop {
            let body: serde_json::Value = get(&app, &path, Some(key)).await.json().await.unwrap();
            assert_eq!(
                body["summary"]["tenants"],
                visible.len(),
                "summary on every page"
            );
            for item in body["items"].as_array().unwrap() {
                paged.push(item["tenant"].as_str().unwrap().to_owned());
            }
            match body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/scores?limit=1&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(
            paged.len(),
            visible.len(),
            "every visible tenant exactly once"
        );
        assert_eq!(&paged.into_iter().collect::<BTreeSet<_>>(), visible);
    }
    // /metrics names every tenant: only the operator key may read it; others see no such route.
    assert_eq!(
        get(&app, "/metrics", Some(&keys.all))
            .await
            .status()
            .as_u16(),
        200
    );
    for key in [&keys.contoso, &keys.gold] {
        let response = get(&app, "/metrics", Some(key)).await;
        assert_eq!(response.status().as_u16(), 404);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    assert_eq!(get(&app, "/metrics", None).await.status().as_u16(), 401);

    // Only the visible tenants' scores were fetched: contoso and litware by two keys, the rest
    // only by the all-tenants key, and each once (then cached).
    let stats = app.emulator.stats();
    for tenant in &everyone {
        assert_eq!(stats.tenant(tenant).score_calls, 1, "{tenant}");
    }
}

#[tokio::test]
async fn a_forbidden_tenant_looks_exactly_like_a_nonexistent_one() {
    let (app, keys) = spawn_with_keys().await;
    for route in ["/tenants/{}", "/tenants/{}/score"] {
        let forbidden = get(&app, &route.replace("{}", "fabrikam"), Some(&keys.contoso)).await;
        let missing = get(
            &app,
            &route.replace("{}", "no-such-tenant"),
            Some(&keys.contoso),
        )
        .await;
        assert_eq!(forbidden.status(), missing.status());
        let header_names = |response: &reqwest::Response| {
            let mut names: Vec<String> = response
                .headers()
                .keys()
                .map(|name| name.to_string())
                .filter(|name| name != "date" && name != "x-request-id")
                .collect();
            names.sort();
            names
        };
        assert_eq!(header_names(&forbidden), header_names(&missing));
        let strip = |mut body: serde_json::Value| {
            body.as_object_mut().unwrap().remove("request_id");
            body
        };
        let forbidden_body = strip(forbidden.json().await.unwrap());
        let missing_body = strip(missing.json().await.unwrap());
        assert_eq!(forbidden_body, missing_body);
        assert_eq!(forbidden_body["code"], "unknown_tenant");
    }
    assert_eq!(
        app.emulator.stats().total.score_calls,
        0,
        "nothing fetched for a hidden tenant"
    );
}

#[tokio::test]
async fn missing_and_unknown_keys_are_401_with_a_challenge() {
    let (app, keys) = spawn_with_keys().await;
    for (key, challenge) in [
        (None, "Bearer realm=\"scoregate\""),
        (
            Some("sg_not-a-real-key"),
            "Bearer realm=\"scoregate\", error=\"invalid_token\"",
        ),
    ] {
        for route in [
            "/tenants",
            "/tenants/contoso",
            "/tenants/contoso/score",
            "/scores",
            "/nope",
        ] {
            let response = get(&app, route, key).await;
            assert_eq!(response.status().as_u16(), 401, "{route}");
            assert_eq!(response.headers()["www-authenticate"], challenge);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["code"], "unauthenticated");
        }
    }
    // The X-API-Key header works as well as the bearer scheme.
    let response = app
        .client
        .get(format!("{}/tenants", app.address))
        .header("x-api-key", &keys.contoso)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Probes and the API description stay open.
    for route in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
        assert_eq!(
            get(&app, route, None).await.status().as_u16(),
            200,
            "{route}"
        );
    }
    assert_eq!(app.emulator.stats().total.score_calls, 0);
}

#[tokio::test]
async fn a_greedy_key_is_rate_limited_without_affecting_another_key() {
    let (app, keys) = spawn_with_keys().await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = get(&app, "/tenants", Some(&keys.slow)).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        remaining.push(
            response.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let reset: u64 = response.headers()["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset <= 60);
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = get(&app, "/tenants", Some(&keys.slow)).await;
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    assert_eq!(refused.headers()["ratelimit-limit"], "3");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Another key is unaffected.
    for _ in 0..5 {
        assert_eq!(
            get(&app, "/tenants", Some(&keys.all))
                .await
                .status()
                .as_u16(),
            200
        );
    }
}

#[tokio::test]
async fn keys_never_appear_in_logs_or_responses() {
    let (app, keys) = spawn_with_keys().await;
    let mut bodies = String::new();
    for key in [&keys.contoso, &keys.gold, &keys.all, &"sg_wrong".to_owned()] {
        for route in ["/tenants", "/tenants/contoso/score", "/tenants/fabrikam"] {
            let response = get(&app, route, Some(key)).await;
            bodies.push_str(&format!("{:?}", response.headers()));
            bodies.push_str(&response.text().await.unwrap());
        }
    }
    let logs = captured_logs();
    assert!(logs.contains("contoso-portal"), "the key's name is logged");
    for key in [&keys.contoso, &keys.gold, &keys.all, &"sg_wrong".to_owned()] {
        assert!(!bodies.contains(key.as_str()), "a key in a response");
        assert!(!logs.contains(key.as_str()), "a key in the logs");
    }
    for secret in app.secrets() {
        assert!(!bodies.contains(&secret) && !logs.contains(&secret));
    }
}

#[tokio::test]
async fn oversized_and_bodied_requests_are_refused_with_problems() {
    let (app, keys) = spawn_with_keys().await;
    let long = format!("/tenants?tag={}", "a".repeat(5000));
    let response = get(&app, &long, Some(&keys.all)).await;
    assert_eq!(response.status().as_u16(), 414);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request");

    let response = app
        .client
        .get(format!("{}/tenants", app.address))
        .bearer_auth(&keys.all)
        .header("x-padding", "p".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);

    let response = app
        .client
        .get(format!("{}/tenants", app.address))
        .bearer_auth(&keys.all)
        .body("{\"unexpected\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("no request bodies"));
}

#[test]
fn keygen_prints_a_key_whose_digest_is_the_printed_entry() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["keygen", "--name", "portal", "--tags", "gold,silver"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let key = text
        .lines()
        .find(|line| line.starts_with("sg_"))
        .expect("a key line");
    let digest = text
        .lines()
        .find_map(|line| line.strip_prefix("sha256 = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a digest line");
    assert_eq!(scoregate::auth::digest_hex(key), digest);
    assert!(text.contains("name = \"portal\""));
    assert!(text.contains("tags = [\"gold\", \"silver\"]\n"), "{text}");
    assert!(!text.contains("tenants"), "no scope is suggested: {text}");
}

#[test]
fn keygen_requires_the_tenants_or_tags_the_key_may_see() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["keygen", "--name", "portal"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains("--tenants") && error.contains("--tags"),
        "{error}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["keygen", "--tenants", "contoso", "--operator"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("--tenants '*'"), "{error}");
}

#[tokio::test]
async fn the_printed_keygen_entry_opens_the_gateway() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["keygen", "--name", "cli-key", "--tenants", "*"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let key = text
        .lines()
        .find(|line| line.starts_with("sg_"))
        .unwrap()
        .to_owned();
    let entry: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[api_keys]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let app = spawn_app_with_config(
        emulator_options(2, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true")],
        &entry,
    )
    .await;
    assert_eq!(
        get(&app, "/tenants", Some(&key)).await.status().as_u16(),
        200
    );
    assert_eq!(get(&app, "/tenants", None).await.status().as_u16(), 401);
}

#[tokio::test]
async fn a_revoked_key_is_refused_and_a_rescoped_key_sees_its_new_tenants_after_a_reload() {
    let (app, keys) = spawn_with_keys().await;
    assert_eq!(
        get(&app, "/tenants", Some(&keys.gold))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        visible_tenants(&app, &keys.contoso).await,
        set(&["contoso"])
    );

    // Revoke the gold key (drop its entry) and widen the contoso key to fabrikam.
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    let edited: String = original
        .split("[[api_keys]]")
        .filter(|entry| !entry.contains("gold-dashboard"))
        .collect::<Vec<_>>()
        .join("[[api_keys]]")
        .replace(
            "tenants = [\"contoso\"]",
            "tenants = [\"contoso\", \"fabrikam\"]",
        );
    std::fs::write(&app.config_path, edited).unwrap();
    app.reloader.reload().await.expect("a valid configuration");

    let refused = get(&app, "/tenants", Some(&keys.gold)).await;
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"scoregate\", error=\"invalid_token\""
    );
    assert_eq!(
        visible_tenants(&app, &keys.contoso).await,
        set(&["contoso", "fabrikam"])
    );
    assert_eq!(
        get(&app, "/tenants", Some(&keys.all))
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn conflicting_credentials_are_refused_with_why_never_resolved() {
    let (app, keys) = spawn_with_keys().await;
    let bearer = |key: &str| format!("Bearer {key}");
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![
                ("x-api-key", keys.contoso.clone()),
                ("authorization", bearer("junk")),
            ],
            "carry different keys",
        ),
        (
            vec![
                ("x-api-key", keys.contoso.clone()),
                ("authorization", "Bearer ".to_owned()),
            ],
            "is not `Bearer <key>`",
        ),
        (
            vec![
                ("x-api-key", keys.contoso.clone()),
                ("authorization", "Basic YTpi".to_owned()),
            ],
            "is not `Bearer <key>`",
        ),
        (
            vec![
                ("authorization", bearer(&keys.contoso)),
                ("x-api-key", "wrong".to_owned()),
            ],
            "carry different keys",
        ),
        (
            vec![
                ("authorization", bearer(&keys.contoso)),
                ("x-api-key", bearer(&keys.all)),
            ],
            "carry different keys",
        ),
        (
            vec![
                ("authorization", bearer(&keys.contoso)),
                ("x-api-key", String::new()),
            ],
            "`X-API-Key` header is empty",
        ),
        (
            vec![
                ("authorization", bearer(&keys.contoso)),
                ("authorization", bearer(&keys.all)),
            ],
            "`Authorization` is given twice",
        ),
        (
            vec![
                ("x-api-key", keys.contoso.clone()),
                ("x-api-key", keys.contoso.clone()),
            ],
            "`X-API-Key` is given twice",
        ),
    ];
    for (headers, why) in &cases {
        let mut request = app
            .client
            .get(format!("{}/tenants/contoso/score", app.address));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{why}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"scoregate\", error=\"invalid_request\"",
            "{why}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthenticated", "{why}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{why}: {detail}");
        assert!(!detail.contains(&keys.contoso), "no key echoed: {detail}");
    }
    // The same key in both headers does not conflict; nothing refused reached Defender.
    assert_eq!(app.emulator.stats().total.score_calls, 0);
    let response = app
        .client
        .get(format!("{}/tenants/contoso/score", app.address))
        .header("authorization", bearer(&keys.contoso))
        .header("x-api-key", &keys.contoso)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.emulator.stats().total.score_calls, 1);
}
