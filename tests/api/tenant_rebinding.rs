//! A gateway tenant id re-pointed at another Entra tenant (its `tenant_id` changed in the
//! configuration) starts a new series: the new customer's key sees none of the previous
//! customer's history, changes or alert events, and the new customer's `secure` score is
//! back-filled from its own Graph; the previous rows are archived, not deleted.

use crate::helpers::{captured_logs, emulator_options, fault, spawn_app_with_config, TestApp};
use scoregate::history::{Interval, Metric, Reading};
use scoregate::model::TenantId;
use sqlx::Row;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Polls `check` every 20 ms until it holds, failing with `what` after 20 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(app: &TestApp, path: &str, key: &str) -> serde_json::Value {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.json().await.unwrap()
}

/// The `[[tenants]]` entry of `slug` in `config` (from its header to the next one).
fn entry<'a>(config: &'a str, slug: &str) -> &'a str {
    let start = config
        .find(&format!("[[tenants]]\nid = \"{slug}\"\n"))
        .expect("the tenant's entry");
    let end = config[start + 1..]
        .find("\n[[")
        .map_or(config.len(), |end| start + 1 + end + 1);
    &config[start..end]
}

/// `entry` with its Entra tenant, client id and credential taken from `from`.
fn re_pointed(entry: &str, from: &str) -> String {
    let credential = |line: &str| {
        line.starts_with("tenant_id")
            || line.starts_with("client_id")
            || line.starts_with("client_secret")
            || line.starts_with("certificate")
    };
    let theirs: Vec<&str> = from.lines().filter(|line| credential(line)).collect();
    let mut lines: Vec<String> = Vec::new();
    for line in entry.lines() {
        if !credential(line) {
            lines.push(line.to_owned());
        } else if line.starts_with("tenant_id") {
            lines.extend(theirs.iter().map(|line| (*line).to_owned()));
        }
    }
    lines.join("\n") + "\n"
}

/// Re-points `slug`'s entry in the app's configuration file at `other`'s Entra tenant (whose
/// own entry goes), and reloads it.
async fn re_point(app: &TestApp, slug: &str, other: &str) {
    let config = std::fs::read_to_string(&app.config_path).unwrap();
    let (mine, theirs) = (entry(&config, slug), entry(&config, other));
    let rewritten = config
        .replace(theirs, "")
        .replace(mine, &re_pointed(mine, theirs));
    std::fs::write(&app.config_path, rewritten).unwrap();
    app.reloader.reload().await.expect("the new file loads");
}

/// Gives `contoso` the device score 111 and another emulator tenant 222; returns the other's
/// slug.
fn scored_apart(app: &TestApp) -> String {
    let other = app
        .emulator
        .tenants()
        .into_iter()
        .map(|tenant| tenant.slug)
        .find(|slug| slug != "contoso")
        .expect("a second tenant");
    app.emulator.set_score("contoso", Some(111.0)).unwrap();
    app.emulator.set_score(&other, Some(222.0)).unwrap();
    other
}

#[tokio::test]
async fn a_tenant_id_re_pointed_at_another_entra_tenant_starts_a_new_series() {
    let (key, digest) = scoregate::auth::generate_key().unwrap();
    let mut slugs: Vec<String> = Vec::new();
    let app = spawn_app_with_config(
        emulator_options(2, vec![]),
        &[
            ("SCOREGATE__AUTH__ENABLED", "true"),
            ("SCOREGATE__UPSTREAM__METRICS", r#"["device","secure"]"#),
        ],
        &format!(
            "[[api_keys]]\nname = \"portal\"\nsha256 = \"{digest}\"\ntenants = [\"contoso\"]\n\n\
             [[alerts]]\nname = \"low\"\nmetric = \"device\"\nbelow = 100000\n"
        ),
    )
    .await;
    slugs.extend(app.emulator.tenants().into_iter().map(|tenant| tenant.slug));
    // The key is the new customer's: it sees `contoso` only.
    let tenant = "contoso".to_owned();
    let other = slugs
        .iter()
        .find(|slug| **slug != tenant)
        .expect("a second tenant")
        .clone();
    assert!(slugs.contains(&tenant), "{slugs:?}");
    let history = app.services.history().unwrap().clone();
    let store = history.store().unwrap().clone();
    let alerts = app.services.alerts().unwrap().clone();
    let day = |days: i64| {
        let now = OffsetDateTime::now_utc();
        (
            now - time::Duration::days(days),
            now + time::Duration::hours(1),
        )
    };
    let points = async |metric| {
        let (from, to) = day(100);
        store
            .history(&tenant, metric, from, to, Interval::Day)
            .await
            .unwrap()
    };

    // The previous customer's series: a device point 8 days old, the secure back-fill, an event.
    history.record(Reading::of_score(
        TenantId::parse(&tenant).unwrap(),
        Metric::Device,
        1.0,
        OffsetDateTime::now_utc() - time::Duration::days(8),
    ));
    get(
        &app,
        &format!("/tenants/{tenant}/score?metric=secure"),
        &key,
    )
    .await;
    until("the first back-fill", async || {
        history.flush().await;
        points(Metric::Secure).await.len() == 90
    })
    .await;
    assert_eq!(app.emulator.stats().tenant(&tenant).graph_calls, 4);
    let scores = get(&app, &format!("/scores?tenant={tenant}"), &key).await;
    assert!(scores["items"][0]["change_7d"].is_number(), "{scores}");
    alerts.flush().await;
    let before = get(&app, "/alerts/events", &key).await;
    assert_eq!(before["events"].as_array().unwrap().len(), 1, "{before}");
    let old_event = before["events"][0]["id"].clone();

    // The gateway id is re-pointed at the other Entra tenant (whose own entry goes).
    re_point(&app, &tenant, &other).await;

    // The new customer's key sees no history, no change, no event, nothing firing.
    let body = get(&app, &format!("/tenants/{tenant}/history"), &key).await;
    assert_eq!(body["points"], serde_json::json!([]), "{body}");
    let body = get(
        &app,
        &format!("/tenants/{tenant}/history?metric=secure"),
        &key,
    )
    .await;
    assert_eq!(body["points"], serde_json::json!([]), "{body}");
    let body = get(&app, "/alerts/events", &key).await;
    assert_eq!(body["events"], serde_json::json!([]), "{body}");
    assert_eq!(
        get(&app, "/alerts", &key).await["alerts"],
        serde_json::json!([])
    );
    // The previous customer's cached scores are not served under the id: the first read of
    // each metric fetches from the Entra tenant the id now stands for.
    let calls = app.emulator.stats().tenant(&other).score_calls;
    let body = get(&app, &format!("/tenants/{tenant}/score"), &key).await;
    assert_eq!(body["source"], "upstream", "{body}");
    assert_eq!(app.emulator.stats().tenant(&other).score_calls, calls + 1);
    let body = get(
        &app,
        &format!("/tenants/{tenant}/score?metric=secure"),
        &key,
    )
    .await;
    assert_eq!(body["source"], "upstream", "{body}");

    let scores = get(&app, &format!("/scores?tenant={tenant}&max_age=0"), &key).await;
    assert!(scores["items"][0]["score"].is_number(), "{scores}");
    assert!(scores["items"][0]["change_7d"].is_null(), "{scores}");
    // Its own rules start from `ok`: the new customer's score fires anew.
    alerts.flush().await;
    let body = get(&app, "/alerts/events", &key).await;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    assert_ne!(events[0]["id"], old_event);

    // Its secure score is back-filled again, from its own Entra tenant's Graph.
    get(
        &app,
        &format!("/tenants/{tenant}/score?metric=secure&max_age=0"),
        &key,
    )
    .await;
    until("the new customer's back-fill", async || {
        history.flush().await;
        points(Metric::Secure).await.len() == 90
    })
    .await;
    // Two secure reads (the first after the reload, then the forced one) and the back-fill's
    // three pages; the previous customer's Graph was not asked again.
    assert_eq!(app.emulator.stats().tenant(&other).graph_calls, 5);
    assert_eq!(app.emulator.stats().tenant(&tenant).graph_calls, 4);

    // The previous rows are archived under an id no tenant can have, and the log says so.
    let archived: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM history_points WHERE tenant LIKE $1")
            .bind(format!("{tenant}@%"))
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
    assert!(archived >= 91, "{archived} archived point(s)");
    let logs = captured_logs();
    assert!(
        logs.contains("this tenant id now names another Entra tenant"),
        "no WARN in the log"
    );
}

/// The history of `url` started for `bindings`, once connected.
async fn started(url: &str, bindings: &[(&str, &str)]) -> scoregate::history::History {
    let history = scoregate::history::History::start_for_tenants(
        &scoregate::config::HistoryConfig {
            enabled: true,
            url: secrecy::SecretString::from(url.to_owned()),
            retention_days: 400,
            alerts_retention_days: 400,
            buffer: 1_000,
            controls: false,
        },
        scoregate::metrics::HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
        bindings
            .iter()
            .map(|(tenant, entra)| (tenant.to_string(), entra.to_string()))
            .collect(),
    );
    until("the database", async || history.store().is_ok()).await;
    history
}

#[tokio::test]
async fn a_restart_with_a_re_pointed_tenant_starts_its_new_series_before_anything_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/h.db?mode=rwc", dir.path().display());
    let postgres = crate::postgres::shared().database().await;
    for url in [sqlite, postgres] {
        let reading = |tenant: &str| {
            Reading::of_score(
                TenantId::parse(tenant).unwrap(),
                Metric::Device,
                300.0,
                OffsetDateTime::now_utc() - time::Duration::days(3),
            )
        };
        let count = async |history: &scoregate::history::History, tenant: &str| {
            let now = OffsetDateTime::now_utc();
            history
                .store()
                .unwrap()
                .history(
                    tenant,
                    Metric::Device,
                    now - time::Duration::days(10),
                    now,
                    Interval::Day,
                )
                .await
                .unwrap()
                .len()
        };
        {
            let history = started(&url, &[("a", "entra-1"), ("b", "entra-2")]).await;
            history.record(reading("a"));
            history.record(reading("b"));
            history.flush().await;
            assert_eq!(count(&history, "a").await, 1);
            history.store().unwrap().close().await;
        }
        // `a` now stands for another Entra tenant; `b` is unchanged; `c` is new.
        let history = started(&url, &[("a", "entra-3"), ("b", "entra-2"), ("c", "x")]).await;
        assert_eq!(count(&history, "a").await, 0, "{url}");
        assert_eq!(count(&history, "b").await, 1, "{url}");
        // Applied once: the same bindings again change nothing.
        assert!(history
            .bind_tenants(vec![
                ("a".to_owned(), "entra-3".to_owned()),
                ("b".to_owned(), "entra-2".to_owned()),
            ])
            .await
            .is_empty());
        let archived: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM history_points WHERE tenant LIKE 'a@entra-1@%'")
                .fetch_one(history.store().unwrap().pool())
                .await
                .unwrap()
                .try_get("n")
                .unwrap();
        assert_eq!(archived, 1, "{url}");
        history.store().unwrap().close().await;
    }
}

#[tokio::test]
async fn a_fetch_in_flight_when_its_tenant_is_re_pointed_answers_its_caller_and_stores_nothing() {
    in_flight_when_re_pointed(&[]).await;
}

#[tokio::test]
async fn with_redis_a_fetch_in_flight_when_its_tenant_is_re_pointed_shares_nothing() {
    let redis = crate::cluster::RedisServer::start();
    let url = redis.url();
    let mut env = crate::cluster::replica_env(&url);
    env.push(("SCOREGATE__CLUSTER__LOCAL_TTL_MS", "0"));
    in_flight_when_re_pointed(&env).await;
}

/// contoso's Defender answers slowly; while its fetch is in flight, the id is re-pointed.
async fn in_flight_when_re_pointed(env: &[(&str, &str)]) {
    let app = spawn_app_with_config(
        scoregate::emulator::EmulatorOptions {
            slow_latency: scoregate::emulator::LatencyRange {
                min_ms: 1_500,
                max_ms: 1_600,
            },
            ..emulator_options(
                2,
                vec![fault(scoregate::emulator::FaultProfile::Slow, &["contoso"])],
            )
        },
        env,
        "",
    )
    .await;
    let other = scored_apart(&app);
    let url = format!("{}/tenants/contoso/score", app.address);
    let client = app.client.clone();
    let slow = tokio::spawn(async move { client.get(url).send().await });
    until("the slow fetch at the emulator", async || {
        app.emulator.stats().tenant("contoso").in_flight == 1
    })
    .await;

    // While contoso's Defender answers slowly, the id is re-pointed at the other Entra tenant.
    re_point(&app, "contoso", &other).await;

    // The request that was waiting gets what it asked for under the previous registration…
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["score"], 111.0, "{body}");
    // …and nobody after it: the next read fetches from the Entra tenant the id stands for now.
    fetched_from(&app, &other).await;
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
}

/// Reads `contoso`'s score, which must come from `other`'s Entra tenant (222), fetched once.
async fn fetched_from(app: &TestApp, other: &str) {
    let (status, _, body) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["score"], 222.0, "{body}");
    assert_eq!(body["source"], "upstream", "{body}");
    assert_eq!(app.emulator.stats().tenant(other).score_calls, 1);
}

/// A gateway on `redis` (history off, `env` added), `contoso` scored 111 and the other tenant
/// 222; returns the other's slug.
async fn on_redis(redis: &crate::cluster::RedisServer, env: &[(&str, &str)]) -> (TestApp, String) {
    let url = redis.url();
    let mut all = crate::cluster::replica_env(&url);
    all.extend_from_slice(env);
    let app = spawn_app_with_config(emulator_options(2, vec![]), &all, "").await;
    let other = scored_apart(&app);
    (app, other)
}

#[tokio::test]
async fn with_redis_a_re_pointed_tenant_s_shared_reading_goes_too() {
    let redis = crate::cluster::RedisServer::start();
    let (app, other) = on_redis(&redis, &[]).await;
    let (status, _, body) = app.get_json("/tenants/contoso/score").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["score"], 111.0, "{body}");
    re_point(&app, "contoso", &other).await;

    // Not this replica's memory, nor the reading Redis shares with the others.
    fetched_from(&app, &other).await;
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
}

#[tokio::test]
async fn with_redis_a_replica_not_yet_reloaded_never_shares_the_previous_customer_s_score() {
    let redis = crate::cluster::RedisServer::start();
    // Every look goes to Redis: what one replica shares, the other sees at once.
    let (app, other) = on_redis(&redis, &[("SCOREGATE__CLUSTER__LOCAL_TTL_MS", "0")]).await;
    // A second replica of the same configuration, which will not have been reloaded yet.
    let before = app.config_path.with_file_name("before-the-reload.toml");
    std::fs::copy(&app.config_path, &before).unwrap();
    let config = scoregate::config::Config::load_with_env(&before, app.overrides.clone()).unwrap();
    let replica = scoregate::app::Application::build(&config).unwrap();
    let second = format!("http://{}/tenants/contoso/score", replica.addr());
    let server = replica.handle();
    tokio::spawn(replica.run_until_stopped());
    let ask = async |url: &str| {
        let response = app.client.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json::<serde_json::Value>().await.unwrap()
    };

    re_point(&app, "contoso", &other).await;

    // The replica not yet reloaded fetches and shares its registration's score…
    let body = ask(&second).await;
    assert_eq!(body["score"], 111.0, "{body}");
    assert_eq!(body["source"], "upstream", "{body}");
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
    // …which the reloaded replica never serves under the re-pointed id: it fetches its own.
    fetched_from(&app, &other).await;
    // Nor does the reading the reloaded replica shared reach the other one's callers.
    let body = ask(&second).await;
    assert_eq!(body["score"], 111.0, "{body}");
    assert_eq!(body["source"], "cache", "{body}");
    assert_eq!(app.emulator.stats().tenant("contoso").score_calls, 1);
    assert_eq!(app.emulator.stats().tenant(&other).score_calls, 1);
    server.stop(false).await;
}
