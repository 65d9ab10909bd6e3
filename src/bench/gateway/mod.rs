//! Benchmark of the gateway in front of the in-process emulator: cold and warm `/scores` (and a
//! cold `/scores?metric=secure`, through Microsoft Graph, beside the device figure), warm
//! single-tenant reads (with an API key, beside nginx's `proxy_cache` serving the same cached
//! Defender answer when nginx is installed), single flight under 1,000 concurrent cold
//! requests, and the resident memory of a separate gateway process with 10,000 warm tenants,
//! history on and off. Each figure that has a target (issue 15) is printed beside it.
//!
//! The gateway beside nginx and the memory's gateway run as processes of their own (this
//! binary's `serve`), as nginx does; the other phases run in this process (emulator, gateway,
//! client) on the same cores, so their figures are conservative. The emulator's quotas are off:
//! the bench measures the gateway, not Defender's limits. Each phase is bounded in time.

mod process;

use process::memory;
pub(crate) use process::{resident_mib, GatewayProcess};

use crate::app::Application;
use crate::config::Config;
use crate::emulator::{Emulator, EmulatorOptions, LatencyRange};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `scoregate bench gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayBenchArgs {
    /// Tenants of the `/scores` phases.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Tenants registered for the memory figure (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub memory_tenants: usize,
    /// Latency the emulator adds to every Defender call, milliseconds.
    #[arg(long, value_name = "MIN..MAX", default_value = "50..150")]
    pub latency_ms: LatencyRange,
    /// `[upstream] max_in_flight` of the gateway.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// How long each warm phase drives requests, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent client tasks of the warm phases.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// A gateway on port 0 in front of `emulator`, configured by the emulator's written file.
struct Gateway {
    address: String,
    _dir: TempDir,
}

/// A scratch directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The API key of the authenticated phases (a bench-only value, not a secret).
const BENCH_KEY: &str = "sg_bench-key-of-scoregate-bench-gateway-not-a-secret";

/// Writes the emulator's configuration into `dir`, with one `[[api_keys]]` entry (all tenants,
/// the highest rate allowed) for [`BENCH_KEY`] appended.
fn write_config(emulator: &Emulator, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = emulator
        .write_config(dir)
        .context("the emulator writes a configuration")?;
    let digest = crate::auth::digest_hex(BENCH_KEY);
    let mut text = std::fs::read_to_string(&path).context("the written configuration")?;
    text.push_str(&format!(
        "\n[[api_keys]]\nname = \"bench\"\nsha256 = \"{digest}\"\ntenants = [\"*\"]\nrequests_per_minute = 1000000\n"
    ));
    std::fs::write(&path, text).context("the bench configuration")?;
    Ok(path)
}

/// The environment overrides of every bench gateway: quotas out of the way, the refresher off,
/// authentication as `auth`.
fn overrides(bind: &str, max_in_flight: usize, auth: bool) -> Vec<(String, String)> {
    [
        ("SCOREGATE__SERVER__BIND", bind.to_owned()),
        ("SCOREGATE__SERVER__WORKERS", "2".to_owned()),
        ("SCOREGATE__AUTH__ENABLED", auth.to_string()),
        ("SCOREGATE__REFRESH__ENABLED", "false".to_owned()),
        // The cold phase with tokens cached forces every tenant with `max_age=0` seconds after
        // the first: the floor between forced fetches must not turn it into cache hits.
        ("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0".to_owned()),
        (
            "SCOREGATE__UPSTREAM__MAX_IN_FLIGHT",
            max_in_flight.to_string(),
        ),
        (
            "SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE",
            "100000".to_owned(),
        ),
        (
            "SCOREGATE__UPSTREAM__REQUESTS_PER_HOUR",
            "1000000".to_owned(),
        ),
        // Graph beside Defender, for the `secure` figure; its limits off like Defender's.
        (
            "SCOREGATE__UPSTREAM__METRICS",
            r#"["device","secure"]"#.to_owned(),
        ),
        (
            "SCOREGATE__UPSTREAM__GRAPH_REQUESTS_PER_MINUTE",
            "100000".to_owned(),
        ),
    ]
    .map(|(key, value)| (key.to_owned(), value))
    .into()
}

async fn gateway(emulator: &Emulator, max_in_flight: usize, auth: bool) -> anyhow::Result<Gateway> {
    let dir = std::env::temp_dir().join(format!("scoregate-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).context("a scratch directory")?;
    let dir = TempDir(dir);
    let path = write_config(emulator, &dir.0)?;
    let overrides = overrides("127.0.0.1:0", max_in_flight, auth);
    let config = Config::load_with_env(&path, overrides).context("the bench configuration")?;
    let application = Application::build(&config)?;
    let address = format!("http://{}", application.addr());
    tokio::spawn(application.run_until_stopped());
    Ok(Gateway { address, _dir: dir })
}

pub(crate) async fn emulator(
    tenants: usize,
    latency: Option<LatencyRange>,
) -> anyhow::Result<Emulator> {
    Emulator::start(EmulatorOptions {
        tenants,
        quota_per_minute: None,
        quota_per_hour: None,
        graph_quota_per_minute: None,
        graph_quota_per_ten_minutes: None,
        graph_max_concurrent: None,
        latency,
        workers: 2,
        ..EmulatorOptions::default()
    })
    .await
    .context("cannot start the emulator")
}

pub(crate) fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Drives GET `paths` (round robin) from `concurrency` tasks for `seconds`; returns the sorted
/// latencies of 200 answers, the failures and the elapsed time.
pub(crate) async fn drive(
    client: &reqwest::Client,
    paths: Arc<Vec<String>>,
    concurrency: usize,
    seconds: u64,
) -> (Vec<Duration>, u64, Duration) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let client = client.clone();
            let paths = paths.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut next = task;
                while Instant::now() < until {
                    let path = &paths[next % paths.len()];
                    next += concurrency;
                    let sent = Instant::now();
                    match client.get(path).send().await {
                        Ok(response) if response.status().is_success() => {
                            if response.bytes().await.is_ok() {
                                latencies.push(sent.elapsed());
                            } else {
                                failures += 1;
                            }
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        if let Ok((mut l, f)) = task.await {
            latencies.append(&mut l);
            failures += f;
        }
    }
    latencies.sort();
    (latencies, failures, started.elapsed())
}

/// Rounds of the wrk comparison with nginx (each drives both servers for `--seconds`).
const WRK_ROUNDS: usize = 3;

/// The warm `/tenants/{id}/score` with an API key against nginx's `proxy_cache` in front of the
/// emulator (when nginx is installed): the bench's own client for both, and wrk's figures too
/// when wrk is installed.
async fn compare_with_nginx(emu: &Emulator, args: &GatewayBenchArgs) -> anyhow::Result<()> {
    let connections = 64;
    // A process of its own, as nginx is: the bench's client does not share its runtime.
    let gw =
        GatewayProcess::start(emu, &reqwest::Client::new(), args.max_in_flight, true, true).await?;
    let slug = emu
        .tenants()
        .first()
        .map(|tenant| tenant.slug.clone())
        .context("no tenant")?;
    let gateway_url = format!("{}/tenants/{slug}/score", gw.address);
    let authorized = |token: &str| -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        Ok(reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(30))
            .build()?)
    };
    let gateway_client = authorized(BENCH_KEY)?;
    // Warm the cache (and check the key works) before measuring.
    let first = gateway_client.get(&gateway_url).send().await?;
    anyhow::ensure!(
        first.status().is_success(),
        "the authenticated gateway answered {}",
        first.status()
    );
    let (latencies, failures, elapsed) = drive(
        &gateway_client,
        Arc::new(vec![gateway_url.clone()]),
        connections,
        args.seconds,
    )
    .await;
    let gateway_rps = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "warm /tenants/{{id}}/score, API key  {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} failed, {} clients)",
        gateway_rps,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures,
        connections
    );
    let Some(binary) = super::nginx::on_path("nginx") else {
        println!("nginx             not on PATH: no comparison (apt-get install nginx)");
        return Ok(());
    };
    let nginx = super::nginx::Nginx::start(&binary, emu, 2)?;
    let token = super::nginx::defender_token(emu).await?;
    let nginx_url = format!("{}{}", nginx.address, crate::wire::CONFIGURATION_SCORE_PATH);
    let nginx_client = authorized(&token)?;
    let first = nginx_client.get(&nginx_url).send().await?;
    anyhow::ensure!(
        first.status().is_success(),
        "nginx answered {}",
        first.status()
    );
    let (latencies, failures, elapsed) = drive(
        &nginx_client,
        Arc::new(vec![nginx_url.clone()]),
        connections,
        args.seconds,
    )
    .await;
    let nginx_rps = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "nginx proxy_cache, same answer      {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} failed, {} clients)",
        nginx_rps,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures,
        connections
    );
    println!(
        "                  gateway / nginx (bench client): {:.2}x (target >= 1.0x)",
        gateway_rps / nginx_rps
    );
    // wrk, the issue's method: rounds alternating the two servers, each round's ratio and their
    // median, so that one burst of other work on the two shared cores does not decide it.
    let mut ratios = Vec::new();
    for round in 1..=WRK_ROUNDS {
        let gateway = super::nginx::wrk(&gateway_url, BENCH_KEY, connections, args.seconds);
        let nginx = super::nginx::wrk(&nginx_url, &token, connections, args.seconds);
        let (Some(gateway), Some(nginx)) = (gateway, nginx) else {
            break;
        };
        ratios.push(gateway / nginx);
        println!(
            "                  wrk -t2 -c{connections} -d{}s, round {round} of {WRK_ROUNDS}: gateway {gateway:.0} req/s, nginx {nginx:.0} req/s, {:.2}x",
            args.seconds,
            gateway / nginx
        );
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        println!(
            "                  wrk gateway / nginx, median of {} rounds: {:.2}x (target >= 1.0x)",
            ratios.len(),
            ratios[ratios.len() / 2]
        );
    }
    Ok(())
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: GatewayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tenants > 0 && args.concurrency > 0 && args.max_in_flight > 0,
        "--tenants, --concurrency and --max-in-flight must be at least 1"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(64))
        .timeout(Duration::from_secs(120))
        .build()?;
    println!("scoregate bench gateway");
    println!(
        "  {} tenants, Defender latency {}..{} ms, max_in_flight {}",
        args.tenants, args.latency_ms.min_ms, args.latency_ms.max_ms, args.max_in_flight
    );

    // Memory of the gateway alone: a separate `scoregate serve` process, history on and off.
    if args.memory_tenants > 0 {
        let emu = emulator(args.memory_tenants, None).await?;
        for history in [true, false] {
            match memory(&emu, &client, args.max_in_flight, history).await {
                Ok(figures) => println!(
                    "memory            gateway process alone, {} tenants, history {}: {:.1} MiB registered, {:.1} MiB with {} scores cached and tokens held (target <= 64 MiB, stretch 48)",
                    args.memory_tenants,
                    if history { "on" } else { "off" },
                    figures.registered,
                    figures.warm,
                    figures.cached
                ),
                Err(error) => println!("memory            not measured: {error:#}"),
            }
        }
        emu.stop().await;
    }

    // Cold /scores: every tenant fetched (a token and a score call each).
    let emu = emulator(args.tenants, Some(args.latency_ms)).await?;
    let gw = gateway(&emu, args.max_in_flight, false).await?;
    let all = format!(
        "{}/scores?limit={}&timeout_ms=60000",
        gw.address,
        args.tenants.min(1000)
    );
    let started = Instant::now();
    let body: serde_json::Value = client.get(&all).send().await?.json().await?;
    let cold = started.elapsed();
    let mean_latency = (args.latency_ms.min_ms + args.latency_ms.max_ms) as f64 / 2.0;
    let bound_ms = args.tenants.div_ceil(args.max_in_flight) as f64 * mean_latency;
    println!(
        "cold /scores      {:.0} ms for {} tenants (ok {}), lower bound ceil({}/{}) x {:.0} ms = {:.0} ms, ratio {:.2} (target <= 1.15)",
        cold.as_secs_f64() * 1000.0,
        body["summary"]["tenants"],
        body["summary"]["ok"],
        args.tenants,
        args.max_in_flight,
        mean_latency,
        bound_ms,
        cold.as_secs_f64() * 1000.0 / bound_ms
    );
    let stats = emu.stats().total;
    println!(
        "                  upstream: {} token requests, {} score calls, max {} concurrent",
        stats.token_requests, stats.score_calls, stats.max_concurrent
    );

    // The fan-out alone: every score fetched again, tokens already cached.
    let started = Instant::now();
    let forced: serde_json::Value = client
        .get(format!("{all}&max_age=0"))
        .send()
        .await?
        .json()
        .await?;
    let refetch = started.elapsed();
    println!(
        "cold /scores, tokens cached (max_age=0)  {:.0} ms (ok {}), ratio to the lower bound {:.2}",
        refetch.as_secs_f64() * 1000.0,
        forced["summary"]["ok"],
        refetch.as_secs_f64() * 1000.0 / bound_ms
    );

    // Warm /scores, one client then many.
    let (latencies, _, elapsed) =
        drive(&client, Arc::new(vec![all.clone()]), 1, args.seconds.min(2)).await;
    println!(
        "warm /scores      one client: p50 {:.2} ms (target < 2 ms), p99 {:.2} ms, {:.0} req/s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    let (latencies, failures, elapsed) = drive(
        &client,
        Arc::new(vec![all.clone()]),
        args.concurrency,
        args.seconds,
    )
    .await;
    println!(
        "warm /scores      p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s ({} ok, {} failed, {} clients)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        failures,
        args.concurrency
    );

    // Warm single-tenant reads.
    let paths: Vec<String> = emu
        .tenants()
        .iter()
        .map(|tenant| format!("{}/tenants/{}/score", gw.address, tenant.slug))
        .collect();
    let (latencies, failures, elapsed) =
        drive(&client, Arc::new(paths), args.concurrency * 4, args.seconds).await;
    println!(
        "warm /tenants/{{id}}/score  {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} failed, {} clients)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures,
        args.concurrency * 4
    );

    // The warm single-tenant score with authentication on, beside nginx's proxy_cache serving
    // the same cached Defender answer: same client, same concurrency, one after the other.
    compare_with_nginx(&emu, &args).await?;

    // Cold /scores?metric=secure: every tenant's Microsoft Secure Score, a Graph token and a
    // Graph call each (the Defender tokens above do not serve Graph's audience). After the warm
    // phases: each first secure reading starts a 90-day Graph back-fill of the history in the
    // background, which would otherwise share the cores with the warm figures.
    let started = Instant::now();
    let secure: serde_json::Value = client
        .get(format!("{all}&metric=secure"))
        .send()
        .await?
        .json()
        .await?;
    let cold_secure = started.elapsed();
    let stats = emu.stats().total;
    println!(
        "cold /scores?metric=secure  {:.0} ms for {} tenants (ok {}), ratio to the lower bound {:.2}; upstream: {} Graph token requests, {} Graph calls",
        cold_secure.as_secs_f64() * 1000.0,
        secure["summary"]["tenants"],
        secure["summary"]["ok"],
        cold_secure.as_secs_f64() * 1000.0 / bound_ms,
        stats.graph_token_requests,
        stats.graph_calls
    );

    // Single flight: a second gateway (cold cache) and 1,000 concurrent requests for one tenant.
    let cold_gw = gateway(&emu, args.max_in_flight, false).await?;
    let slug = emu
        .tenants()
        .first()
        .map(|tenant| tenant.slug.clone())
        .context("no tenant")?;
    emu.reset_stats();
    let url = format!("{}/tenants/{slug}/score", cold_gw.address);
    let burst = (0..1000).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    });
    let started = Instant::now();
    let ok = futures::future::join_all(burst)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    let counters = emu.stats().tenant(&slug);
    println!(
        "single flight     1000 concurrent cold requests for {slug}: {ok} ok in {:.0} ms, {} score call(s), {} token request(s)",
        started.elapsed().as_secs_f64() * 1000.0,
        counters.score_calls,
        counters.token_requests
    );
    drop(cold_gw);
    drop(gw);
    emu.stop().await;

    Ok(())
}
