//! The history wired into the gateway: every successful fetch recorded once, `secure`
//! back-filled from Graph once, `change_Nd` on `/scores` (sorting, cursors, CSV, history off),
//! the readings written at shutdown, and durability: kill -9 of a real `scoregate serve`, and a
//! PostgreSQL outage during traffic.

use crate::helpers::{emulator_options, spawn_app_with, TestApp};
use crate::postgres::PgServer;
use scoregate::app::Application;
use scoregate::config::Config;
use scoregate::history::{Interval, Metric, Reading, Store};
use scoregate::model::TenantId;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The gateway's store, once every reading recorded so far is written.
async fn flushed_store(app: &TestApp) -> Store {
    let history = app.services.history().expect("history is on");
    tokio::time::timeout(Duration::from_secs(10), history.flush())
        .await
        .expect("the readings are written");
    history.store().expect("connected").clone()
}

fn slug(app: &TestApp, index: usize) -> String {
    let mut slugs: Vec<String> = app
        .emulator
        .tenants()
        .into_iter()
        .map(|tenant| tenant.slug)
        .collect();
    slugs.sort();
    slugs[index].clone()
}

fn day_range() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::days(100),
        now + time::Duration::hours(1),
    )
}

#[tokio::test]
async fn every_successful_fetch_is_recorded_once_and_cache_hits_are_not() {
    let app = spawn_app_with(emulator_options(2, vec![]), &[]).await;
    let tenant = slug(&app, 0);
    let path = format!("/tenants/{tenant}/score");
    let (status, _, first) = app.get_json(&path).await;
    assert_eq!(status, 200);
    assert_eq!(first["source"], "upstream");
    let (_, _, hit) = app.get_json(&path).await;
    assert_eq!(hit["source"], "cache");
    let (_, _, forced) = app.get_json(&format!("{path}?max_age=0")).await;
    assert_eq!(forced["source"], "upstream");
    assert_eq!(app.emulator.stats().tenant(&tenant).score_calls, 2);

    let store = flushed_store(&app).await;
    let (from, to) = day_range();
    let points = store
        .history(&tenant, Metric::Device, from, to, Interval::Day)
        .await
        .unwrap();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].samples, 2, "two fetches, two readings");
    assert_eq!(points[0].score, forced["score"].as_f64().unwrap());
    assert_eq!(app.services.history().unwrap().stats().written, 2);
    // Through the route too.
    let (status, _, body) = app.get_json(&format!("/tenants/{tenant}/history")).await;
    assert_eq!(status, 200);
    assert_eq!(body["points"][0]["samples"], 2);
}

/// Waits until the tenant's `secure` history has `count` day points.
async fn wait_for_daily_points(store: &Store, tenant: &str, count: usize) -> Vec<f64> {
    let started = Instant::now();
    let (from, to) = day_range();
    loop {
        let points = store
            .history(tenant, Metric::Secure, from, to, Interval::Day)
            .await
            .unwrap();
        if points.len() >= count {
            return points.iter().map(|point| point.score).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no back-fill: {} day point(s)",
            points.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many back-fills the gateway started, once every one of them has ended.
async fn backfills_ended(history: &scoregate::history::History) -> u64 {
    let ended = async {
        loop {
            let (started, ended) = history.backfills();
            if started == ended {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("every back-fill ends")
}

#[tokio::test]
async fn secure_is_backfilled_once_in_three_pages_and_not_again_after_a_restart() {
    let app = spawn_app_with(
        emulator_options(2, vec![]),
        &[("SCOREGATE__UPSTREAM__METRICS", r#"["device","secure"]"#)],
    )
    .await;
    let tenant = slug(&app, 0);
    let path = format!("/tenants/{tenant}/score?metric=secure");
    let (status, _, body) = app.get_json(&path).await;
    assert_eq!(status, 200, "{body}");
    let store = flushed_store(&app).await;
    let scores = wait_for_daily_points(&store, &tenant, 90).await;
    assert_eq!(
        scores.len(),
        90,
        "Graph's 90 days, today's reading in today's day"
    );
    let (status, _, history) = app
        .get_json(&format!("/tenants/{tenant}/history?metric=secure"))
        .await;
    assert_eq!(status, 200);
    let points = history["points"].as_array().unwrap();
    assert_eq!(points.len(), 90);
    assert!(points.iter().all(|point| point["max_score"].is_number()));
    // Today's point ends with the gateway's own reading.
    assert_eq!(points[89]["score"], body["score"]);
    // One fetch, one back-fill in three pages of 30 days (90 distinct days arrived, so each
    // page skipped the ones before): four Graph calls; the other tenant had none.
    assert_eq!(app.emulator.stats().tenant(&tenant).graph_calls, 4);
    assert_eq!(app.emulator.stats().tenant(&slug(&app, 1)).graph_calls, 0);

    // The next fetch does not back-fill again: it starts no back-fill at all (the fetch
    // decides before it answers), and the one back-fill there was has ended.
    let history = app.services.history().unwrap();
    assert_eq!(backfills_ended(history).await, 1);
    let (status, _, _) = app.get_json(&format!("{path}&max_age=0")).await;
    assert_eq!(status, 200);
    flushed_store(&app).await;
    assert_eq!(
        backfills_ended(history).await,
        1,
        "a second back-fill started"
    );
    assert_eq!(app.emulator.stats().tenant(&tenant).graph_calls, 5);

    // Nor does a restarted gateway on the same database (the default, beside the config).
    app.server.stop(true).await;
    let config = Config::load_with_env(&app.config_path, app.overrides.clone()).unwrap();
    let restarted = Application::build(&config).expect("the gateway starts again");
    let address = format!("http://{}", restarted.addr());
    let services = restarted.services().clone();
    tokio::spawn(restarted.run_until_stopped());
    // Connected first: a back-fill that finds no database yet skips its check (and would
    // make no Graph call whatever the database holds).
    let history = services.history().unwrap();
    let connected = async {
        while history.store().is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("the restarted gateway connects to its database");
    let response = reqwest::get(format!("{address}{path}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    tokio::time::timeout(Duration::from_secs(10), history.flush())
        .await
        .unwrap();
    // This process checks once: its back-fill ends finding Graph's days already there.
    assert_eq!(backfills_ended(history).await, 1);
    assert_eq!(app.emulator.stats().tenant(&tenant).graph_calls, 6);
    let store = history.store().unwrap().clone();
    assert_eq!(wait_for_daily_points(&store, &tenant, 90).await.len(), 90);
}

fn device(tenant: &str, at: OffsetDateTime, score: f64) -> Reading {
    Reading::of_score(TenantId::parse(tenant).unwrap(), Metric::Device, score, at)
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["tenant"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn change_7d_is_the_stored_arithmetic_and_sorts_drops_first_with_cursors() {
    let app = spawn_app_with(emulator_options(3, vec![]), &[]).await;
    let (a, b, c) = (slug(&app, 0), slug(&app, 1), slug(&app, 2));
    // The scores now, from the single-tenant route: `/scores` would read (and keep for the
    // day) the past scores before the points below exist.
    let mut now = std::collections::HashMap::new();
    for id in [&a, &b, &c] {
        let (status, _, body) = app.get_json(&format!("/tenants/{id}/score")).await;
        assert_eq!(status, 200, "{body}");
        now.insert(id.clone(), body["score"].as_f64().unwrap());
    }
    let score = |id: &str| now[id];
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let day = |n: i64, hour: i64| today - time::Duration::days(n) + time::Duration::hours(hour);
    let store = flushed_store(&app).await;
    store
        .write(&[
            // a: 8 days ago, then the last point of the day 7 days ago, then one after it
            // (6 days ago), which the 7-day change must ignore.
            device(&a, day(8, 10), score(&a) + 99.0),
            device(&a, day(7, 9), score(&a) - 40.25),
            device(&a, day(7, 23), score(&a) - 30.5),
            device(&a, day(6, 12), score(&a) + 1000.0),
            // b: dropped by 20 since 7 days ago; and yesterday's point for change_1d.
            device(&b, day(7, 12), score(&b) + 20.0),
            device(&b, day(1, 12), score(&b) - 3.0),
            // c: no point that old.
            device(&c, day(2, 12), score(&c)),
        ])
        .await
        .unwrap();

    let (status, _, body) = app.get_json("/scores?sort=change_7d").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), [b.clone(), a.clone(), c.clone()]);
    let items = body["items"].as_array().unwrap();
    let close = |value: &serde_json::Value, expected: f64| {
        (value.as_f64().unwrap() - expected).abs() < 1e-6
    };
    assert!(close(&items[0]["change_7d"], -20.0), "{}", items[0]);
    assert!(close(&items[0]["change_1d"], 3.0), "{}", items[0]);
    assert!(close(&items[1]["change_7d"], 30.5), "{}", items[1]);
    assert!(items[1]["change_1d"].is_number(), "{}", items[1]);
    assert!(close(&items[1]["change_1d"], -1000.0), "{}", items[1]);
    assert!(items[2]["change_7d"].is_null(), "{}", items[2]);
    assert!(items[2]["change_1d"].is_number());
    for item in items {
        assert!(item["change_30d"].is_null() && item["change_90d"].is_null());
    }
    let (_, _, body) = app.get_json("/scores?sort=-change_7d").await;
    assert_eq!(ids(&body), [a.clone(), b.clone(), c.clone()]);

    // Cursors follow the same order, one item per page.
    let mut seen = Vec::new();
    let mut next = "/scores?sort=change_7d&limit=1".to_owned();
    loop {
        let (status, _, page) = app.get_json(&next).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("/scores?sort=change_7d&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [b.clone(), a.clone(), c.clone()]);

    // CSV: the four columns after the existing ones.
    let text = app
        .get("/scores.csv?sort=change_7d")
        .await
        .text()
        .await
        .unwrap();
    let mut lines = text.split("\r\n");
    assert!(lines
        .next()
        .unwrap()
        .ends_with(",category_infrastructure,change_1d,change_7d,change_30d,change_90d"));
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row[0], b);
    assert_eq!(&row[19..], ["3", "-20", "", ""], "{row:?}");
}

#[tokio::test]
async fn changes_are_null_and_scores_answer_when_history_is_off() {
    let app = spawn_app_with(
        emulator_options(2, vec![]),
        &[("SCOREGATE__HISTORY__ENABLED", "false")],
    )
    .await;
    let (status, _, body) = app.get_json("/scores?sort=-change_7d").await;
    assert_eq!(status, 200);
    for item in body["items"].as_array().unwrap() {
        assert_eq!(item["status"], "ok");
        for field in ["change_1d", "change_7d", "change_30d", "change_90d"] {
            assert!(item[field].is_null(), "{item}");
        }
    }
    // Nulls last, ties by tenant id: the id order.
    assert_eq!(ids(&body), [slug(&app, 0), slug(&app, 1)]);
}

#[tokio::test]
async fn readings_buffered_at_shutdown_are_written_before_the_gateway_stops() {
    let emulator = crate::helpers::start_emulator(emulator_options(2, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let path = emulator.write_config(dir.path()).unwrap();
    let env = [
        ("SCOREGATE__SERVER__BIND", "127.0.0.1:0"),
        ("SCOREGATE__REFRESH__ENABLED", "false"),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    let config = Config::load_with_env(&path, env).unwrap();
    let application = Application::build(&config).unwrap();
    let address = format!("http://{}", application.addr());
    let services = application.services().clone();
    let shutdown = application.shutdown_token();
    let running = tokio::spawn(application.run_until_stopped());
    let history = services.history().unwrap().clone();
    for tenant in emulator.tenants() {
        let response = reqwest::get(format!("{address}/tenants/{}/score", tenant.slug))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    // As SIGTERM does; once `run_until_stopped` returns the process exits, so whatever is
    // still buffered then is lost: it must be written by then.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within the grace period")
        .unwrap()
        .unwrap();
    let stats = history.stats();
    assert_eq!((stats.pending, stats.written), (0, 2), "{stats:?}");
}

// --- Durability -------------------------------------------------------------------------------

/// A `scoregate serve` process on `config` with `database` as its history.
async fn serve(config: &std::path::Path, database: &str) -> crate::helpers::ServedProcess {
    crate::helpers::serve_process(config, database, &[]).await
}

/// `/tenants/{tenant}/history?interval=hour` once it has `samples` readings in all, polled.
async fn history_with(address: &str, tenant: &str, samples: i64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let response = reqwest::get(format!("{address}/tenants/{tenant}/history?interval=hour"))
            .await
            .unwrap();
        if response.status().as_u16() == 200 {
            let body: serde_json::Value = response.json().await.unwrap();
            let total: i64 = body["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|point| point["samples"].as_i64().unwrap())
                .sum();
            if total >= samples {
                return body;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the writer did not report {samples} readings written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_9_loses_no_committed_point_and_the_restarted_gateway_serves_the_same_history() {
    let emulator = crate::helpers::start_emulator(emulator_options(3, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = emulator.write_config(dir.path()).unwrap();
    let database = format!("sqlite://{}/kept.db", dir.path().display());
    let mut gateway = serve(&config, &database).await;
    let tenants: Vec<String> = emulator.tenants().into_iter().map(|t| t.slug).collect();
    let client = reqwest::Client::new();
    for tenant in &tenants {
        for _ in 0..3 {
            let response = client
                .get(format!(
                    "{}/tenants/{tenant}/score?max_age=0",
                    gateway.address
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    }
    let mut before = Vec::new();
    for tenant in &tenants {
        before.push(history_with(&gateway.address, tenant, 3).await);
    }
    gateway.child.start_kill().unwrap(); // SIGKILL
    let status = gateway.child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");

    let restarted = serve(&config, &database).await;
    for (tenant, before) in tenants.iter().zip(&before) {
        let after = history_with(&restarted.address, tenant, 3).await;
        assert_eq!(&after, before, "{tenant}");
    }
}

#[tokio::test]
async fn a_postgres_outage_fails_and_slows_no_score_request_and_points_arrive_after() {
    let postgres = PgServer::start();
    let database = postgres.database().await;
    let app = spawn_app_with(
        emulator_options(4, vec![]),
        &[("SCOREGATE__HISTORY__URL", database.as_str())],
    )
    .await;
    let tenants: Vec<String> = (0..4).map(|index| slug(&app, index)).collect();
    let store = flushed_store(&app).await;
    postgres.stop();
    // Traffic during the outage: forced fetches (readings to record) and /scores (changes to
    // look up); none fails, none waits on the database.
    let history = app.services.history().unwrap();
    let mut fetched = 0;
    for round in 0..3 {
        for tenant in &tenants {
            // Below the pool's 5 s acquire timeout: a request that waited for a connection
            // fails here rather than hanging the test.
            let path = format!("/tenants/{tenant}/score?max_age=0");
            let fetch = app.get_json(&path);
            let (status, _, body) = tokio::time::timeout(Duration::from_secs(4), fetch)
                .await
                .expect("the request waited for the database");
            assert_eq!(status, 200, "{body}");
            fetched += 1;
            // Answered with its reading queued and nothing written (nothing can be while the
            // database is down): the request did not wait for the write.
            let stats = history.stats();
            assert_eq!(
                (stats.written, stats.pending),
                (0, fetched as i64),
                "round {round}: {stats:?}"
            );
        }
        let started = Instant::now();
        let (status, _, body) = app.get_json("/scores?sort=change_7d").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["summary"]["ok"], 4, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the changes wait at most a short grace after the scores"
        );
        assert!(body["items"][0]["change_7d"].is_null());
    }
    let stats = app.services.history().unwrap().stats();
    assert_eq!(stats.dropped, 0, "buffered, not dropped: {stats:?}");

    postgres.start_again();
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .expect("the buffered readings are written once the database is back");
    assert_eq!(history.stats().written, fetched);
    let (from, to) = day_range();
    for tenant in &tenants {
        let points = store
            .history(tenant, Metric::Device, from, to, Interval::Day)
            .await
            .unwrap();
        assert_eq!(points.iter().map(|p| p.samples).sum::<i64>(), 3, "{tenant}");
    }
}
