//! The API's contract with its clients (issue 9, "Interfaces" and "What real clients stumble
//! on"): paging CSV through `Link` headers, empty query values, cursors that are opaque and bound
//! to their caller, and an OpenAPI document that says every status the gateway answers.

use crate::control_history_route::{seed_app, SECURE, SEEDED_CONTROL};
use crate::helpers::{
    emulator_options, fault, spawn_app, spawn_app_with, spawn_app_with_config, TestApp,
};
use scoregate::auth::generate_key;
use scoregate::emulator::FaultProfile;
use std::collections::{BTreeMap, BTreeSet};

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get("link")?.to_str().unwrap();
    let (target, params) = value.split_once(';').unwrap();
    assert_eq!(params.trim(), "rel=\"next\"", "{value}");
    let target = target.trim();
    assert!(target.starts_with('<') && target.ends_with('>'), "{value}");
    Some(target[1..target.len() - 1].to_owned())
}

/// The first column of every data row of a CSV page.
fn csv_tenants(text: &str) -> Vec<String> {
    let mut lines = text.split("\r\n");
    assert!(lines.next().unwrap().starts_with("tenant,name,"), "{text}");
    lines
        .filter(|line| !line.is_empty())
        .map(|line| line.split(',').next().unwrap().to_owned())
        .collect()
}

/// Follows `Link: rel="next"` from `first`, returning every CSV row's tenant and the pages seen.
async fn follow_csv(app: &TestApp, first: &str) -> (Vec<String>, usize) {
    let mut url = Some(first.to_owned());
    let (mut rows, mut pages) = (Vec::new(), 0);
    while let Some(path) = url {
        pages += 1;
        assert!(pages < 20, "the links loop");
        let response = app.get(&path).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        url = next_link(response.headers());
        if let Some(next) = &url {
            assert!(next.starts_with(first.split('?').next().unwrap()), "{next}");
        }
        rows.extend(csv_tenants(&response.text().await.unwrap()));
    }
    (rows, pages)
}

#[tokio::test]
async fn csv_is_paged_through_its_link_header_and_every_row_comes_exactly_once() {
    let app = spawn_app(emulator_options(7, vec![])).await;
    let (_, _, all) = app.get_json("/scores").await;
    let expected: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["tenant"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 7);
    // The CSV operation, the `format=csv` alternative, and the filters kept across pages
    // (a value that needs percent-encoding too).
    for first in [
        "/scores.csv?limit=3",
        "/scores?format=csv&limit=2&sort=name",
        "/scores.csv?limit=3&sort=-score&tag=&cursor=",
    ] {
        let (rows, pages) = follow_csv(&app, first).await;
        let mut sorted = rows.clone();
        sorted.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(sorted, want, "{first}: every row exactly once");
        assert!(pages >= 3, "{first}: {pages} pages");
    }
    // A tag filter with characters that need encoding stays in the link, encoded.
    let response = app.get("/scores.csv?limit=1&tag=a%20b%26c").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        next_link(response.headers()).is_none(),
        "no tenant has that tag"
    );
    let response = app
        .get("/scores.csv?limit=1&tenant=contoso&tenant=fabrikam&tenant=a%2Bb%20c")
        .await;
    let next = next_link(response.headers()).expect("a second page");
    assert!(
        next.starts_with(
            "/scores.csv?limit=1&tenant=contoso&tenant=fabrikam&tenant=a%2Bb+c&cursor="
        ),
        "{next}"
    );
    assert!(!next.contains(['<', '>', ' ', '"']), "{next}");
}

#[tokio::test]
async fn json_pages_carry_the_same_next_link_as_their_next_cursor() {
    let app = spawn_app(emulator_options(5, vec![])).await;
    let (status, headers, page) = app.get_json("/scores?limit=2&sort=name").await;
    assert_eq!(status, 200);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = next_link(&headers).unwrap();
    assert_eq!(next, format!("/scores?limit=2&sort=name&cursor={cursor}"));
    let (_, headers, second) = app.get_json(&next).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    let (_, headers, last) = app.get_json(&next_link(&headers).unwrap()).await;
    assert!(last["next_cursor"].is_null());
    assert!(headers.get("link").is_none(), "no link on the last page");
}

#[tokio::test]
async fn an_empty_query_value_means_the_parameter_is_absent_on_every_route() {
    let app = spawn_app(emulator_options(3, vec![])).await;
    let (_, _, plain) = app.get_json("/scores").await;
    let (status, _, empty) = app
        .get_json("/scores?cursor=&tenant=&tag=&sort=&limit=&status=&max_age=&timeout_ms=&format=")
        .await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["summary"]["tenants"], 3);
    let tenants = |page: &serde_json::Value| -> Vec<serde_json::Value> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["tenant"].clone())
            .collect()
    };
    assert_eq!(tenants(&empty), tenants(&plain));
    for path in [
        "/tenants?tag=",
        "/tenants/contoso?tag=",
        "/tenants/contoso/score?max_age=",
        "/scores.csv?cursor=&sort=&limit=",
        "/scores?sort",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    // A value that only decodes to blank is a value, and refused where it is wrong.
    let (status, _, problem) = app.get_json("/scores?sort=%20").await;
    assert_eq!(status, 400);
    assert_eq!(problem["code"], "invalid_request");
    let (status, _, _) = app.get_json("/scores.csv?format=csv").await;
    assert_eq!(status, 400, "format belongs to /scores");
}

#[tokio::test]
async fn a_cursor_issued_to_one_key_is_refused_for_another_and_names_no_tenant() {
    let (first, first_digest) = generate_key().unwrap();
    let (second, second_digest) = generate_key().unwrap();
    let keys = format!(
        "[[api_keys]]\nname = \"first\"\nsha256 = \"{first_digest}\"\ntenants = [\"*\"]\n\n\
         [[api_keys]]\nname = \"second\"\nsha256 = \"{second_digest}\"\ntenants = [\"*\"]\n"
    );
    let app = spawn_app_with_config(
        emulator_options(4, vec![]),
        &[("SCOREGATE__AUTH__ENABLED", "true")],
        &keys,
    )
    .await;
    let get = |path: String, key: String| {
        let request = app.client.get(format!("{}{path}", app.address));
        async move { request.bearer_auth(key).send().await.unwrap() }
    };
    let page: serde_json::Value = get("/scores?limit=1".into(), first.clone())
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert!(!cursor.contains('.'), "one opaque token: {cursor}");
    let tenant = page["items"][0]["tenant"].as_str().unwrap();
    for readable in [tenant.to_owned(), format!("\"{tenant}\"")] {
        let decoded =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &cursor)
                .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&decoded).contains(&readable));
    }
    let response = get(format!("/scores?limit=1&cursor={cursor}"), second.clone()).await;
    assert_eq!(response.status().as_u16(), 400);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_request");
    assert!(
        problem["detail"].as_str().unwrap().contains("API key"),
        "{problem}"
    );
    let response = get(format!("/scores.csv?limit=1&cursor={cursor}"), second).await;
    assert_eq!(response.status().as_u16(), 400);
    let response = get(format!("/scores?limit=1&cursor={cursor}"), first).await;
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn gateways_sharing_a_configured_cursor_key_accept_each_others_cursors() {
    let secret = "c2NvcmVnYXRlLWN1cnNvci1rZXktZm9yLXRlc3Rz";
    let env = [
        ("SCOREGATE__SERVER__CURSOR_KEY__ENV", "TEST_CURSOR_KEY"),
        ("TEST_CURSOR_KEY", secret),
    ];
    // Same seed, same tenants: two replicas of one deployment.
    let one = spawn_app_with(emulator_options(3, vec![]), &env).await;
    let two = spawn_app_with(emulator_options(3, vec![]), &env).await;
    let stranger = spawn_app(emulator_options(3, vec![])).await;
    let (_, _, page) = one.get_json("/scores?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = format!("/scores?limit=1&cursor={cursor}");
    let (status, _, on_two) = two.get_json(&next).await;
    assert_eq!(status, 200, "{on_two}");
    assert_ne!(on_two["items"][0]["tenant"], page["items"][0]["tenant"]);
    let (status, _, _) = stranger.get_json(&next).await;
    assert_eq!(status, 400, "a random per-process key opens nothing else");
}

#[test]
fn a_short_or_missing_cursor_key_is_refused_with_its_key_named() {
    let dir = std::env::temp_dir().join(format!("scoregate-cursor-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scoregate.toml");
    std::fs::write(
        &path,
        "[server]\ncursor_key = { env = \"CURSOR\" }\n[auth]\nenabled = false\n",
    )
    .unwrap();
    let load = |env: &[(&str, &str)]| {
        scoregate::config::Config::load_with_env(
            &path,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    let error = load(&[("CURSOR", "too-short")]).unwrap_err().to_string();
    assert!(error.contains("server.cursor_key: at least 32"), "{error}");
    assert!(!error.contains("too-short"), "the secret is not quoted");
    let error = load(&[]).unwrap_err().to_string();
    assert!(error.contains("server.cursor_key.env"), "{error}");
    let config = load(&[("CURSOR", "0123456789abcdef0123456789abcdef")]).unwrap();
    assert!(config.cursor_key.is_some());
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
}

/// Every (path, method) the document describes, with its documented statuses.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    let mut operations = BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert_eq!(method, "get", "{path}: only GET is expected");
            let statuses = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            operations.insert(path.clone(), statuses);
        }
    }
    operations
}

#[tokio::test]
async fn every_status_the_gateway_answers_is_documented_for_its_operation() {
    let (operator, operator_digest) = generate_key().unwrap();
    let (reader, reader_digest) = generate_key().unwrap();
    let (limited, limited_digest) = generate_key().unwrap();
    let keys = format!(
        "[[api_keys]]\nname = \"operator\"\nsha256 = \"{operator_digest}\"\ntenants = [\"*\"]\noperator = true\n\n\
         [[api_keys]]\nname = \"reader\"\nsha256 = \"{reader_digest}\"\ntenants = [\"*\"]\n\n\
         [[api_keys]]\nname = \"limited\"\nsha256 = \"{limited_digest}\"\ntenants = [\"*\"]\nrequests_per_minute = 1\n"
    );
    let app = spawn_app_with_config(
        emulator_options(
            6,
            vec![
                fault(FaultProfile::Revoked, &["fabrikam"]),
                fault(FaultProfile::Throttled, &["adatum"]),
            ],
        ),
        &[("SCOREGATE__AUTH__ENABLED", "true"), SECURE],
        &keys,
    )
    .await;
    app.services.set_ready();
    // A control's history to read (nothing fetches controls in this test).
    seed_app(&app).await;
    let operations = documented();
    let paths: BTreeSet<&str> = operations.keys().map(String::as_str).collect();
    let expected_paths = BTreeSet::from([
        "/alerts",
        "/alerts/events",
        "/webhooks/deliveries",
        "/controls",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/readyz",
        "/scores",
        "/scores.csv",
        "/scores/history",
        "/scores/history.csv",
        "/tenants",
        "/tenants/{id}",
        "/tenants/{id}/controls",
        "/tenants/{id}/history",
        "/tenants/{id}/history.csv",
        "/tenants/{id}/controls/{control}/history",
        "/tenants/{id}/score",
    ]);
    assert_eq!(paths, expected_paths);
    // Use up the limited key's one request.
    let _ = app
        .client
        .get(format!("{}/tenants", app.address))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();

    let mut answered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (template, documented) in &operations {
        let open = matches!(template.as_str(), "/healthz" | "/readyz" | "/openapi.json");
        let concrete = template
            .replace("{id}", "contoso")
            .replace("{control}", SEEDED_CONTROL);
        let long = format!("{concrete}?tag={}", "a".repeat(5000));
        // (path, key, method, body, big header)
        let mut probes: Vec<(String, Option<&str>, reqwest::Method, bool, bool)> = vec![
            (
                concrete.clone(),
                Some(&operator),
                reqwest::Method::GET,
                false,
                false,
            ),
            (
                concrete.clone(),
                Some(&operator),
                reqwest::Method::GET,
                true,
                false,
            ),
            (
                concrete.clone(),
                Some(&operator),
                reqwest::Method::DELETE,
                false,
                false,
            ),
            (
                concrete.clone(),
                Some(&operator),
                reqwest::Method::POST,
                false,
                false,
            ),
            (long, Some(&operator), reqwest::Method::GET, false, false),
            (
                concrete.clone(),
                Some(&operator),
                reqwest::Method::GET,
                false,
                true,
            ),
            (
                format!("{concrete}?unknown=1"),
                Some(&operator),
                reqwest::Method::GET,
                false,
                false,
            ),
            (concrete.clone(), None, reqwest::Method::GET, false, false),
            (
                concrete.clone(),
                Some(&limited),
                reqwest::Method::GET,
                false,
                false,
            ),
            (
                concrete.clone(),
                Some(&reader),
                reqwest::Method::GET,
                false,
                false,
            ),
        ];
        if template.contains("{id}") {
            for id in ["no-such-tenant", "fabrikam", "adatum"] {
                probes.push((
                    template
                        .replace("{id}", id)
                        .replace("{control}", SEEDED_CONTROL),
                    Some(&operator),
                    reqwest::Method::GET,
                    false,
                    false,
                ));
            }
        }
        for (path, key, method, body, big_header) in probes {
            let mut request = app
                .client
                .request(method.clone(), format!("{}{path}", app.address));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if body {
                request = request.body("{}");
            }
            if big_header {
                request = request.header("x-padding", "p".repeat(17 * 1024));
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let what = format!("{method} {path:.60} (key {key:?})");
            if status == 405 {
                // Other methods are not operations; the API description states the 405.
                assert_ne!(method, reqwest::Method::GET, "{what}");
                assert_eq!(response.headers()["allow"], "GET", "{what}");
            } else {
                assert_eq!(method, reqwest::Method::GET, "{what}: {status}");
                assert!(
                    documented.contains(&status.to_string()),
                    "{what} answered {status}, which {template} does not document"
                );
            }
            if status >= 400 {
                let content_type = response.headers()["content-type"].to_str().unwrap();
                assert_eq!(content_type, "application/problem+json", "{what}");
            }
            answered
                .entry(template.clone())
                .or_default()
                .insert(status.to_string());
        }
        let answered = &answered[template];
        for status in ["200", "400", "405", "414", "431"] {
            assert!(
                answered.contains(status),
                "{template} never answered {status}"
            );
        }
        if !open {
            for status in ["401", "429"] {
                assert!(
                    answered.contains(status),
                    "{template} never answered {status}"
                );
            }
        }
        // The other direction: what is documented was seen, except what a healthy test
        // gateway cannot be made to answer on demand.
        let unprovoked: BTreeSet<&str> = documented
            .iter()
            .map(String::as_str)
            .filter(|status| !answered.contains(*status))
            .collect();
        let allowed: BTreeSet<&str> = match template.as_str() {
            "/readyz" => BTreeSet::from(["503"]),
            "/tenants/{id}/score"
            | "/tenants/{id}/controls"
            | "/scores"
            | "/scores.csv"
            | "/controls" => BTreeSet::from(["500", "504"]),
            // Only with the database away (503) or history turned off (404 on the portfolio).
            "/tenants/{id}/history"
            | "/tenants/{id}/history.csv"
            | "/tenants/{id}/controls/{control}/history" => BTreeSet::from(["500", "503", "504"]),
            "/scores/history" | "/scores/history.csv" => {
                BTreeSet::from(["404", "500", "503", "504"])
            }
            // Only with history off (404 `alerts_disabled`) or the database away (503).
            "/alerts" | "/alerts/events" => BTreeSet::from(["404", "500", "503", "504"]),
            "/webhooks/deliveries" => BTreeSet::from(["500", "503", "504"]),
            _ if open => BTreeSet::new(),
            _ => BTreeSet::from(["500"]),
        };
        // 403 needs an Entra ID token that maps to no caller (tests/api/entra.rs provokes it).
        let mut allowed = allowed;
        if !open {
            allowed.insert("403");
        }
        assert!(
            unprovoked.is_subset(&allowed),
            "{template} documents {unprovoked:?} that the walk did not see"
        );
    }
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    let description = document["info"]["description"].as_str().unwrap();
    assert!(description.contains("405"), "{description}");
    assert!(description.contains("empty value means"), "{description}");
}
