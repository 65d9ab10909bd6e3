//! `GET /controls` over real HTTPS against the emulator: one row per control across the
//! caller's tenants, counts and points that add up to the tenants' own lists, the tenants still
//! to do, paging with sealed cursors and `Link`, CSV, scoped keys, failed tenants listed, and
//! profiles fetched once per tenant — and a replica serving another replica's score.

use crate::cluster::{RedisServer, Replicas};
use crate::helpers::{emulator_options, fault, spawn_app_with, spawn_app_with_config, TestApp};
use scoregate::auth::generate_key;
use scoregate::emulator::FaultProfile;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const SECURE_ONLY: [(&str, &str); 2] = [
    ("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#),
    ("SCOREGATE__HISTORY__ENABLED", "false"),
];

fn rows(body: &Value) -> &Vec<Value> {
    body["controls"].as_array().expect("a controls array")
}

async fn get(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_add_up_the_tenants_own_controls_most_points_to_gain_first() {
    let app = spawn_app_with(emulator_options(4, vec![]), &SECURE_ONLY).await;
    let (status, _, body) = app.get_json("/controls?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenants"], 4);
    assert_eq!(body["complete"], true);
    assert_eq!(body["failed"], serde_json::json!([]));
    assert!(body["next_cursor"].is_null());
    assert!(body["generated_at"].is_string());
    let list = rows(&body);
    let gains: Vec<f64> = list
        .iter()
        .map(|row| row["points_to_gain"].as_f64().unwrap())
        .collect();
    assert!(gains.windows(2).all(|pair| pair[0] >= pair[1]), "{gains:?}");

    // The same figures from each tenant's own list.
    let mut expected: BTreeMap<String, (f64, BTreeSet<String>, [u32; 5])> = BTreeMap::new();
    for tenant in ["contoso", "fabrikam", "northwind", "litware"] {
        let (_, _, own) = app.get_json(&format!("/tenants/{tenant}/controls")).await;
        for control in own["controls"].as_array().unwrap() {
            let entry = expected
                .entry(control["id"].as_str().unwrap().to_owned())
                .or_default();
            entry.0 += control["points_to_gain"].as_f64().unwrap();
            let slot = match (control["state"].as_str(), control["status"].as_str()) {
                (Some("ignored"), _) => 3,
                (Some("third_party"), _) => 4,
                (_, Some("done")) => 0,
                (_, Some("partial")) => 1,
                _ => 2,
            };
            entry.2[slot] += 1;
            if slot == 1 || slot == 2 {
                entry.1.insert(tenant.to_owned());
            }
        }
    }
    assert_eq!(list.len(), expected.len());
    for row in list {
        let (points, todo, counts) = &expected[row["id"].as_str().unwrap()];
        assert!(
            (row["points_to_gain"].as_f64().unwrap() - points).abs() < 0.02,
            "{row}"
        );
        let got = ["done", "partial", "todo", "ignored", "third_party"]
            .map(|field| row[field].as_u64().unwrap() as u32);
        assert_eq!(&got, counts, "{row}");
        let listed: BTreeSet<String> = row["todo_tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&listed, todo, "{row}");
        assert_eq!(row["todo_tenants_count"], todo.len());
        assert!(row["title"].is_string() && row["max_score"].is_number());
    }
    assert!(list.iter().any(|row| row["ignored"].as_u64() > Some(0)));
    assert!(list.iter().any(|row| row["third_party"].as_u64() > Some(0)));

    // Profiles: two pages per tenant, once, whatever was asked since.
    let stats = app.emulator.stats();
    for tenant in ["contoso", "fabrikam", "northwind", "litware"] {
        assert_eq!(stats.tenant(tenant).control_profile_calls, 2, "{tenant}");
        assert_eq!(stats.tenant(tenant).graph_calls, 1, "{tenant}");
    }

    let (_, _, device) = app.get_json("/controls?category=device").await;
    assert!(!rows(&device).is_empty());
    assert!(rows(&device).iter().all(|row| row["category"] == "device"));
    assert!(rows(&device)
        .iter()
        .any(|row| row["id"].as_str().unwrap().starts_with("scid_")));
    let (_, _, todo) = app.get_json("/controls?status=todo&sort=id").await;
    assert!(rows(&todo).iter().all(|row| row["todo"].as_u64() > Some(0)));
    let todo_ids: Vec<&str> = rows(&todo)
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let mut sorted = todo_ids.clone();
    sorted.sort();
    assert_eq!(todo_ids, sorted);
}

#[tokio::test]
async fn pages_follow_their_cursor_and_link_and_come_as_csv_too() {
    let app = spawn_app_with(emulator_options(2, vec![]), &SECURE_ONLY).await;
    let (_, _, whole) = app.get_json("/controls?limit=1000").await;
    let all: Vec<String> = rows(&whole)
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect();
    let mut paged = Vec::new();
    let mut path = "/controls?limit=25".to_owned();
    loop {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        let link = response
            .headers()
            .get("link")
            .map(|link| link.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        assert!(rows(&body).len() <= 25);
        paged.extend(
            rows(&body)
                .iter()
                .map(|row| row["id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                let link = link.expect("a Link header with the next page");
                assert!(link.starts_with("</controls?") && link.ends_with(">; rel=\"next\""));
                assert!(link.contains("limit=25"), "{link}");
                path = format!("/controls?limit=25&cursor={cursor}");
            }
            None => {
                assert!(link.is_none());
                break;
            }
        }
        assert!(paged.len() <= all.len(), "paging never ends");
    }
    assert_eq!(paged, all, "every row once, in order");

    // A cursor belongs to its query.
    let (_, _, first) = app.get_json("/controls?limit=5").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, _, refused) = app
        .get_json(&format!("/controls?limit=5&sort=id&cursor={cursor}"))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("cursor"));
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("timeout_ms=0", "timeout_ms"),
        ("sort=points", "sort"),
        ("category=network", "category"),
    ] {
        let (status, _, body) = app.get_json(&format!("/controls?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["detail"].as_str().unwrap().contains(parameter),
            "{body}"
        );
    }

    let response = app.get("/controls?limit=1000&format=csv").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "id");
    assert!(header.contains(&"todo_tenants".to_owned()));
    let ids: Vec<String> = reader
        .records()
        .map(|row| row.unwrap()[0].to_owned())
        .collect();
    assert_eq!(ids, all);
    let response = app.get("/controls?limit=5&format=csv").await;
    assert!(
        response.headers().contains_key("link"),
        "CSV pages link on too"
    );
}

#[tokio::test]
async fn scoped_keys_see_only_their_tenants_and_failed_tenants_are_listed() {
    let (contoso_key, contoso_digest) = generate_key().unwrap();
    let (all_key, all_digest) = generate_key().unwrap();
    let keys = format!(
        "[[api_keys]]\nname = \"contoso-portal\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"all\"\nsha256 = \"{all_digest}\"\ntenants = [\"*\"]\n"
    );
    let mut env = SECURE_ONLY.to_vec();
    env.push(("SCOREGATE__AUTH__ENABLED", "true"));
    // The third tenant's Graph refuses the app (403): its controls cannot be read.
    let app = spawn_app_with_config(
        emulator_options(3, vec![fault(FaultProfile::GraphForbidden, &["northwind"])]),
        &env,
        &keys,
    )
    .await;

    let scoped: Value = get(&app, "/controls", &contoso_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scoped["tenants"], 1, "{scoped}");
    assert_eq!(scoped["complete"], true);
    for row in rows(&scoped) {
        for tenant in row["todo_tenants"].as_array().unwrap() {
            assert_eq!(tenant, "contoso");
        }
        assert!(row["done"].as_u64().unwrap() + row["todo_tenants_count"].as_u64().unwrap() <= 1);
    }
    let other = get(&app, "/tenants/fabrikam/controls", &contoso_key).await;
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["code"], "unknown_tenant");
    let own = get(&app, "/tenants/contoso/controls", &contoso_key).await;
    assert_eq!(own.status(), 200);
    // Someone else's tenant ids never reach a scoped key, not even by `tenant=`.
    let named: Value = get(&app, "/controls?tenant=fabrikam", &contoso_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(named["tenants"], 0);
    assert_eq!(named["failed"], serde_json::json!([]));

    let everyone: Value = get(&app, "/controls", &all_key).await.json().await.unwrap();
    assert_eq!(everyone["tenants"], 2, "{everyone}");
    assert_eq!(everyone["complete"], false);
    let failed = everyone["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{everyone}");
    assert_eq!(failed[0]["tenant"], "northwind");
    assert_eq!(failed[0]["error"]["code"], "upstream_auth");
    assert_eq!(failed[0]["error"]["status"], 502);
    assert!(rows(&everyone).iter().all(|row| row["todo_tenants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t != "northwind")));
    let by_tag: Value = get(&app, "/controls?tag=no-such-tag", &all_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_tag["tenants"], 0);
}

#[tokio::test]
async fn a_replica_serving_another_replicas_score_reads_its_controls_and_profiles_itself() {
    let redis = RedisServer::start();
    let replicas = Replicas::start(
        2,
        emulator_options(1, vec![]),
        &redis,
        &[("SCOREGATE__UPSTREAM__METRICS", r#"["secure"]"#)],
    )
    .await;
    let (status, first) = replicas.get(0, "/tenants/contoso/controls").await;
    assert_eq!(status, 200, "{first}");
    let stats = replicas.emulator.stats().tenant("contoso");
    assert_eq!((stats.graph_calls, stats.control_profile_calls), (1, 2));

    // The score is shared through Redis: the second replica does not call Graph for it…
    let (status, score) = replicas
        .get(1, "/tenants/contoso/score?metric=secure")
        .await;
    assert_eq!(status, 200, "{score}");
    assert_eq!(replicas.emulator.stats().tenant("contoso").graph_calls, 1);
    // …but holds no snapshot of its own: one call for it, and its own profiles.
    let (status, second) = replicas.get(1, "/tenants/contoso/controls").await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["time"], first["time"]);
    assert_eq!(second["controls"], first["controls"]);
    let stats = replicas.emulator.stats().tenant("contoso");
    assert_eq!((stats.graph_calls, stats.control_profile_calls), (2, 4));
    // Once.
    let (status, _) = replicas.get(1, "/tenants/contoso/controls").await;
    assert_eq!(status, 200);
    let stats = replicas.emulator.stats().tenant("contoso");
    assert_eq!((stats.graph_calls, stats.control_profile_calls), (2, 4));
}
