//! Benchmark of the gateway in front of the in-process emulator: cold and warm `/scores` (and a
//! cold `/scores?metric=secure`, through Microsoft Graph, beside the device figure), warm
//! single-tenant reads, single flight under 1,000 concurrent cold requests, and resident memory
//! with 10,000 registered tenants.
//!
//! Everything runs in this process (emulator, gateway, client) on the same cores, so the
//! figures are conservative. The emulator's quotas are off: the bench measures the gateway, not
//! Defender's limits. Each phase is bounded in time.

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
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn gateway(emulator: &Emulator, max_in_flight: usize) -> anyhow::Result<Gateway> {
    let dir = std::env::temp_dir().join(format!("scoregate-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).context("a scratch directory")?;
    let dir = TempDir(dir);
    let path = emulator
        .write_config(&dir.0)
        .context("the emulator writes a configuration")?;
    let overrides = [
        ("SCOREGATE__SERVER__BIND", "127.0.0.1:0".to_owned()),
        ("SCOREGATE__SERVER__WORKERS", "2".to_owned()),
        ("SCOREGATE__AUTH__ENABLED", "false".to_owned()),
        ("SCOREGATE__REFRESH__ENABLED", "false".to_owned()),
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
    .map(|(key, value)| (key.to_owned(), value));
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

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
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

/// Resident memory of this process, in MiB (Linux `/proc/self/status`).
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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

    // Memory with many registered tenants, first, while the process is fresh.
    if args.memory_tenants > 0 {
        let before = resident_mib();
        let emu = emulator(args.memory_tenants, None).await?;
        let with_emulator = resident_mib();
        let gw = gateway(&emu, args.max_in_flight).await?;
        let registered = resident_mib();
        let mut cursor: Option<String> = None;
        let started = Instant::now();
        let mut cached = 0u64;
        // Every tenant fetched once, page by page (bounded to two minutes).
        while started.elapsed() < Duration::from_secs(120) {
            let mut url = format!("{}/scores?limit=1000&timeout_ms=60000", gw.address);
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page: serde_json::Value = client.get(&url).send().await?.json().await?;
            cached = page["summary"]["ok"].as_u64().unwrap_or(0);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let warm = resident_mib();
        let mib = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1} MiB"));
        println!(
            "memory            {} tenants: process {} before, {} with the emulator, {} with the gateway registered, {} with {} scores cached",
            args.memory_tenants,
            mib(before),
            mib(with_emulator),
            mib(registered),
            mib(warm),
            cached
        );
        if let (Some(with_emulator), Some(warm)) = (with_emulator, warm) {
            println!(
                "                  gateway share (process minus emulator): {:.1} MiB",
                warm - with_emulator
            );
        }
        drop(gw);
        emu.stop().await;
    }

    // Cold /scores: every tenant fetched (a token and a score call each).
    let emu = emulator(args.tenants, Some(args.latency_ms)).await?;
    let gw = gateway(&emu, args.max_in_flight).await?;
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
        "cold /scores      {:.0} ms for {} tenants (ok {}), lower bound ceil({}/{}) x {:.0} ms = {:.0} ms, ratio {:.2}",
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

    // Cold /scores?metric=secure: every tenant's Microsoft Secure Score, a Graph token and a
    // Graph call each (the Defender tokens above do not serve Graph's audience).
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

    // Warm /scores, one client then many.
    let (latencies, _, elapsed) =
        drive(&client, Arc::new(vec![all.clone()]), 1, args.seconds.min(2)).await;
    println!(
        "warm /scores      one client: p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s",
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

    // Single flight: a second gateway (cold cache) and 1,000 concurrent requests for one tenant.
    let cold_gw = gateway(&emu, args.max_in_flight).await?;
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
