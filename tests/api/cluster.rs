//! Several replicas against one emulator and one real `redis-server`: the cache, single flight,
//! the per-tenant quota, cursors and refreshes behave like one gateway; Redis going away and
//! coming back never fails a request. The quota's Lua script against the real Redis is tested in
//! `cluster_quota`, `[cluster]` at load in `cluster_config`.
//!
//! [`RedisServer`] runs `redis-server --port N --save '' --appendonly no` on a free port, killed
//! when dropped (`scripts/test.sh` installs it where missing). [`Replicas`] starts three
//! gateways in this process from one written configuration, as three processes with the same
//! file would be (history off: it is PostgreSQL's business, tested in `history`).

use scoregate::app::Application;
use scoregate::config::Config;
use scoregate::emulator::{Emulator, EmulatorOptions};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a free port, without persistence; killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { port, child: None };
        server.start_again();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) server on the same port and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test.sh, which installs it");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server at once (an outage, as a crash looks to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The overrides of a test gateway that shares `url`'s Redis with one more replica (history
/// off: it is PostgreSQL's business).
pub fn replica_env(url: &str) -> Vec<(&str, &str)> {
    vec![
        ("SCOREGATE__CLUSTER__REDIS_URL", url),
        ("SCOREGATE__CLUSTER__REPLICAS", "2"),
        ("SCOREGATE__CLUSTER__COMMAND_TIMEOUT_MS", "2000"),
        ("SCOREGATE__HISTORY__ENABLED", "false"),
    ]
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three gateways sharing one emulator and one Redis.
pub struct Replicas {
    /// `http://127.0.0.1:PORT` of each replica.
    pub addresses: Vec<String>,
    /// The emulator behind them all.
    pub emulator: Emulator,
    /// A plain client.
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    servers: Vec<actix_web::dev::ServerHandle>,
}

/// The cursor secret every replica is given (`[server] cursor_key`).
const CURSOR_KEY: &str = "a-cursor-key-shared-by-every-replica-0123456789";

impl Replicas {
    /// Starts `count` replicas against `redis` with test-friendly settings plus `env`.
    pub async fn start(
        count: usize,
        options: EmulatorOptions,
        redis: &RedisServer,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_staggered(count, options, redis, env, Duration::ZERO).await
    }

    /// As [`Replicas::start`], each replica `gap` after the one before (as a rolling start).
    pub async fn start_staggered(
        count: usize,
        options: EmulatorOptions,
        redis: &RedisServer,
        env: &[(&str, &str)],
        gap: Duration,
    ) -> Self {
        crate::helpers::capture_logs();
        let emulator = crate::helpers::start_emulator(options).await;
        let dir = tempfile::Builder::new()
            .prefix("scoregate-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let config_path = emulator
            .write_config(dir.path())
            .expect("the emulator writes a configuration");
        let url = redis.url();
        let replicas = count.to_string();
        let mut overrides: Vec<(String, String)> = [
            ("SCOREGATE__SERVER__BIND", "127.0.0.1:0"),
            ("SCOREGATE__SERVER__WORKERS", "2"),
            (
                "SCOREGATE__SERVER__CURSOR_KEY",
                "{ env = \"SG_CURSOR_KEY\" }",
            ),
            ("SG_CURSOR_KEY", CURSOR_KEY),
            ("SCOREGATE__REFRESH__ENABLED", "false"),
            ("SCOREGATE__HISTORY__ENABLED", "false"),
            ("SCOREGATE__UPSTREAM__RETRY_BASE_MS", "10"),
            ("SCOREGATE__UPSTREAM__RETRY_MAX_MS", "40"),
            ("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0"),
            ("SCOREGATE__CLUSTER__REDIS_URL", url.as_str()),
            ("SCOREGATE__CLUSTER__REPLICAS", replicas.as_str()),
            ("SCOREGATE__CLUSTER__WAIT_POLL_MS", "10"),
            // Generous: on a loaded 2-core machine a healthy Redis may answer after 250 ms, and
            // a replica that took that for an outage would fall back to its local limiters.
            ("SCOREGATE__CLUSTER__COMMAND_TIMEOUT_MS", "2000"),
        ]
        .iter()
        .chain(env.iter())
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        overrides.sort_by(|a, b| a.0.cmp(&b.0));
        let config = Config::load_with_env(&config_path, overrides)
            .expect("the written configuration loads");
        let mut addresses = Vec::new();
        let mut servers = Vec::new();
        for index in 0..count {
            if index > 0 {
                tokio::time::sleep(gap).await;
            }
            let application = Application::build(&config).expect("the gateway starts");
            addresses.push(format!("http://{}", application.addr()));
            servers.push(application.handle());
            tokio::spawn(application.run_until_stopped());
        }
        let replicas = Self {
            addresses,
            emulator,
            client: reqwest::Client::new(),
            _dir: dir,
            servers,
        };
        if !config.auth.enabled {
            replicas.wait_until_redis_is(1).await;
        }
        replicas
    }

    /// GET `path` on replica `index`: status and JSON body.
    pub async fn get(&self, index: usize, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.addresses[index]))
            .send()
            .await
            .expect("the replica answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// `scoregate_cluster_redis_up` of replica `index`, from its `/metrics`.
    pub async fn redis_up(&self, index: usize) -> Option<u8> {
        let text = self
            .client
            .get(format!("{}/metrics", self.addresses[index]))
            .send()
            .await
            .expect("the replica answers")
            .text()
            .await
            .expect("a body");
        text.lines()
            .find_map(|line| line.strip_prefix("scoregate_cluster_redis_up "))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Waits (5 s at most) until every replica reports `scoregate_cluster_redis_up` = `up`.
    pub async fn wait_until_redis_is(&self, up: u8) {
        for _ in 0..500 {
            let mut all = true;
            for index in 0..self.addresses.len() {
                all &= self.redis_up(index).await == Some(up);
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the replicas never reported scoregate_cluster_redis_up {up}");
    }

    /// The emulator's Defender score calls for `slug`.
    pub fn score_calls(&self, slug: &str) -> u64 {
        self.emulator.stats().tenant(slug).score_calls
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for server in &self.servers {
            drop(server.stop(false));
        }
    }
}

pub(crate) fn options(tenants: usize) -> EmulatorOptions {
    EmulatorOptions {
        tenants,
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn a_hundred_and_fifty_cold_requests_over_three_replicas_make_one_upstream_call() {
    let redis = RedisServer::start();
    let replicas = Replicas::start(3, options(2), &redis, &[]).await;
    let requests = (0..150).map(|i| {
        let replicas = &replicas;
        async move { replicas.get(i % 3, "/tenants/contoso/score").await }
    });
    let answers = futures::future::join_all(requests).await;
    let scores: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["score"].to_string()
        })
        .collect();
    assert_eq!(scores.len(), 1, "every replica serves the one reading");
    assert_eq!(replicas.score_calls("contoso"), 1);
    assert_eq!(replicas.emulator.stats().total.score_calls, 1);
}

#[tokio::test]
async fn forced_fetches_from_every_replica_stay_within_the_per_minute_limit() {
    let redis = RedisServer::start();
    // The emulator enforces the same 10 per minute: one call over it would be a 429 there.
    let emulator = EmulatorOptions {
        quota_per_minute: Some(10),
        ..options(1)
    };
    let replicas = Replicas::start(
        3,
        emulator,
        &redis,
        &[("SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE", "10")],
    )
    .await;
    // Waves of forced fetches from all three replicas at once, until well past the limit.
    let mut statuses = Vec::new();
    for _ in 0..16 {
        let wave = (0..6).map(|i| {
            let replicas = &replicas;
            async move {
                replicas
                    .get(i % 3, "/tenants/contoso/score?max_age=0")
                    .await
            }
        });
        for (status, body) in futures::future::join_all(wave).await {
            assert!(
                status == 200 || (status == 503 && body["code"] == "upstream_throttled"),
                "{status} {body}"
            );
            statuses.push(status);
        }
    }
    let stats = replicas.emulator.stats().tenant("contoso");
    assert_eq!(stats.responses_429, 0, "the emulator never had to refuse");
    assert_eq!(
        stats.score_calls, 10,
        "the shared minute is used up, not more"
    );
    assert!(
        statuses.contains(&503),
        "the gateway refused the rest itself"
    );
}

#[tokio::test]
async fn a_cursor_from_one_replica_pages_on_another() {
    let redis = RedisServer::start();
    let replicas = Replicas::start(3, options(4), &redis, &[]).await;
    let (status, first) = replicas.get(0, "/scores?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (status, second) = replicas
        .get(2, &format!("/scores?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(status, 200, "{second}");
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["tenant"].to_string())
            .collect()
    };
    let (first, second) = (ids(&first), ids(&second));
    assert_eq!(second.len(), 2);
    assert!(
        first.iter().all(|id| !second.contains(id)),
        "{first:?} {second:?}"
    );
}

#[tokio::test]
async fn redis_killed_mid_traffic_fails_no_request_and_shared_mode_comes_back() {
    let mut redis = RedisServer::start();
    // Every look-up asks Redis, so that the outage is noticed at once.
    let replicas = Replicas::start(
        3,
        options(3),
        &redis,
        &[("SCOREGATE__CLUSTER__LOCAL_TTL_MS", "0")],
    )
    .await;
    for index in 0..3 {
        assert_eq!(replicas.get(index, "/tenants/contoso/score").await.0, 200);
    }
    assert_eq!(replicas.score_calls("contoso"), 1);
    redis.stop();
    // Warm and cold tenants alike are served while Redis is gone.
    for round in 0..3 {
        for index in 0..3 {
            let (status, body) = replicas.get(index, "/tenants/contoso/score").await;
            assert_eq!(status, 200, "round {round}, replica {index}: {body}");
            let (status, body) = replicas.get(index, "/tenants/fabrikam/score").await;
            assert_eq!(status, 200, "round {round}, replica {index}: {body}");
        }
    }
    replicas.wait_until_redis_is(0).await;
    assert_eq!(
        replicas.score_calls("contoso"),
        1,
        "served from the first level"
    );
    let (status, _) = replicas.get(0, "/readyz").await;
    assert_eq!(status, 200, "a degraded replica is still ready");
    redis.start_again();
    replicas.wait_until_redis_is(1).await;
    // Shared again: a cold tenant is fetched once for the three.
    let requests = (0..30).map(|i| {
        let replicas = &replicas;
        async move { replicas.get(i % 3, "/tenants/northwind/score").await }
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(replicas.score_calls("northwind"), 1);
    let logs = crate::helpers::captured_logs();
    assert!(
        logs.contains("Redis is unavailable"),
        "the outage is logged"
    );
    assert!(logs.contains("Redis answers again"), "so is the recovery");
}

#[tokio::test]
async fn three_refreshers_make_about_one_replicas_worth_of_calls() {
    let redis = RedisServer::start();
    let tenants = 4;
    // A refresh period (and lease) of 1.5 s.
    const PERIOD: Duration = Duration::from_millis(1_500);
    // Before the first replica starts: every lease is taken after this.
    let began = std::time::Instant::now();
    // Started 300 ms apart, so that their rounds never overlap: single flight alone would not
    // spare a call, only the leases do.
    let replicas = Replicas::start_staggered(
        3,
        options(tenants),
        &redis,
        &[
            ("SCOREGATE__REFRESH__ENABLED", "true"),
            ("SCOREGATE__REFRESH__STARTUP_SPREAD_SECONDS", "0"),
            ("SCOREGATE__CACHE__FRESH_SECONDS", "2"),
        ],
        Duration::from_millis(300),
    )
    .await;
    // Awaited, not timed: two rounds' worth of calls, so the second period has begun and
    // every replica has had a first round. With the leases, each tenant is fetched at most
    // once per lease period, by whichever replica holds it, however slow the machine (a
    // slower one only has more periods behind it, counted from the clock); without them,
    // three replicas make three times that.
    let two_rounds = async {
        while replicas.emulator.stats().total.score_calls < 2 * tenants as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), two_rounds)
        .await
        .expect("the tenants are refreshed twice");
    let calls = replicas.emulator.stats().total.score_calls;
    let elapsed = began.elapsed();
    let periods = (elapsed.as_millis() / PERIOD.as_millis()) as u64 + 1;
    assert!(
        calls <= periods * tenants as u64,
        "at most one call per tenant per lease period: {calls} in {elapsed:?}"
    );
}

#[tokio::test]
async fn a_keys_request_rate_is_shared_by_every_replica() {
    let redis = RedisServer::start();
    let (key, digest) = scoregate::auth::generate_key().expect("a key");
    let keys = format!(
        r#"[{{ name = "portal", sha256 = "{digest}", tenants = ["*"], requests_per_minute = 4 }}]"#
    );
    let replicas = Replicas::start(
        3,
        options(1),
        &redis,
        &[
            ("SCOREGATE__AUTH__ENABLED", "true"),
            ("SCOREGATE__API_KEYS", keys.as_str()),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = replicas
            .client
            .get(format!("{}/tenants", replicas.addresses[i % 3]))
            .bearer_auth(&key)
            .send()
            .await
            .expect("the replica answers");
        statuses.push((
            response.status().as_u16(),
            response
                .headers()
                .get("ratelimit-remaining")
                .map(|value| value.to_str().unwrap_or_default().to_owned()),
        ));
    }
    // Four per minute for the key, whichever replica is asked.
    let codes: Vec<u16> = statuses.iter().map(|(status, _)| *status).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 429, 429], "{statuses:?}");
    assert_eq!(statuses[0].1.as_deref(), Some("3"), "{statuses:?}");
    assert_eq!(statuses[3].1.as_deref(), Some("0"), "{statuses:?}");
}
