//! Benchmark of several replicas: upstream calls and warm requests per second for one gateway
//! alone versus three replicas sharing one Redis, all in this process against one emulator and
//! one `redis-server` the bench starts (skipped when `redis-server` is not on `PATH`).
//!
//! Targets (issue 14): cold calls with three replicas at most 1.1 × those of one gateway, and
//! warm requests per second of each replica within 10 % of the single gateway's. Each replica's
//! warm figure is measured with that replica driven alone, so that three in-process replicas
//! sharing the machine's cores compare like with like: what is measured is the cost of sharing
//! (a first-level cache that checks Redis every `local_ttl_ms`), not the cores.

use crate::app::Application;
use crate::bench::gateway::{drive, emulator};
use crate::config::Config;
use crate::emulator::{Emulator, LatencyRange};
use anyhow::Context;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Options of `scoregate bench cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterBenchArgs {
    /// Tenants asked for in the cold phase (each by every replica).
    #[arg(long, default_value_t = 200)]
    pub tenants: usize,
    /// Latency the emulator adds to every Defender call, milliseconds.
    #[arg(long, value_name = "MIN..MAX", default_value = "20..60")]
    pub latency_ms: LatencyRange,
    /// How long each warm phase drives requests, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent client tasks of the warm phases.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> anyhow::Result<Option<Redis>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = match Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).context("cannot start redis-server"),
    };
    let redis = Redis { port, child };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Some(redis));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!("redis-server did not start on port {port}")
}

/// `count` gateways from the emulator's written configuration; with `redis`, in cluster mode
/// under `prefix`.
async fn replicas(
    emulator: &Emulator,
    dir: &std::path::Path,
    count: usize,
    redis: Option<(&Redis, &str)>,
) -> anyhow::Result<Vec<String>> {
    let path = emulator
        .write_config(dir)
        .context("the emulator writes a configuration")?;
    let mut overrides = vec![
        ("SCOREGATE__SERVER__BIND", "127.0.0.1:0".to_owned()),
        ("SCOREGATE__SERVER__WORKERS", "2".to_owned()),
        ("SCOREGATE__AUTH__ENABLED", "false".to_owned()),
        ("SCOREGATE__REFRESH__ENABLED", "false".to_owned()),
        ("SCOREGATE__HISTORY__ENABLED", "false".to_owned()),
        (
            "SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE",
            "100000".to_owned(),
        ),
        (
            "SCOREGATE__UPSTREAM__REQUESTS_PER_HOUR",
            "1000000".to_owned(),
        ),
    ];
    if let Some((redis, prefix)) = redis {
        overrides.push((
            "SCOREGATE__CLUSTER__REDIS_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ));
        overrides.push(("SCOREGATE__CLUSTER__REPLICAS", count.to_string()));
        overrides.push(("SCOREGATE__CLUSTER__KEY_PREFIX", prefix.to_owned()));
    }
    let overrides = overrides
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value));
    let config = Config::load_with_env(&path, overrides).context("the bench configuration")?;
    let mut addresses = Vec::new();
    for _ in 0..count {
        let application = Application::build(&config)?;
        addresses.push(format!("http://{}", application.addr()));
        tokio::spawn(application.run_until_stopped());
    }
    Ok(addresses)
}

/// Every tenant asked for by every replica at once; returns the emulator's score calls.
async fn cold(
    client: &reqwest::Client,
    emulator: &Emulator,
    addresses: &[String],
    tenants: usize,
) -> u64 {
    emulator.reset_stats();
    let slugs: Vec<String> = emulator
        .tenants()
        .into_iter()
        .take(tenants)
        .map(|tenant| tenant.slug)
        .collect();
    let requests = slugs.iter().flat_map(|slug| {
        addresses.iter().map(move |address| {
            let url = format!("{address}/tenants/{slug}/score");
            async move { client.get(url).send().await.map(|r| r.status()) }
        })
    });
    let _ = futures::future::join_all(requests).await;
    emulator.stats().total.score_calls
}

/// Warm requests per second of one replica driven alone.
async fn warm(
    client: &reqwest::Client,
    emulator: &Emulator,
    address: &str,
    tenants: usize,
    args: &ClusterBenchArgs,
) -> (f64, u64) {
    let paths: Vec<String> = emulator
        .tenants()
        .into_iter()
        .take(tenants)
        .map(|tenant| format!("{address}/tenants/{}/score", tenant.slug))
        .collect();
    let (latencies, failures, elapsed) =
        drive(client, Arc::new(paths), args.concurrency, args.seconds).await;
    (latencies.len() as f64 / elapsed.as_secs_f64(), failures)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    let Some(redis) = start_redis()? else {
        println!(
            "bench cluster: skipped, redis-server is not on PATH (scripts/test.sh installs it)"
        );
        return Ok(());
    };
    let tenants = args.tenants.max(1);
    let emulator = emulator(tenants, Some(args.latency_ms)).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let scratch = std::env::temp_dir().join(format!("scoregate-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).context("a scratch directory")?;
    let result = async {
        let single = replicas(&emulator, &scratch, 1, None).await?;
        let three = replicas(&emulator, &scratch, 3, Some((&redis, "bench"))).await?;
        println!(
            "bench cluster: {tenants} tenants, emulator latency {}..{} ms, {} s per warm phase, {} client tasks",
            args.latency_ms.min_ms, args.latency_ms.max_ms, args.seconds, args.concurrency
        );
        let calls_one = cold(&client, &emulator, &single, tenants).await;
        let calls_three = cold(&client, &emulator, &three, tenants).await;
        let ratio = calls_three as f64 / calls_one.max(1) as f64;
        println!(
            "upstream calls, every tenant cold:  1 gateway {calls_one}, 3 replicas {calls_three} \
             ({ratio:.2}×; target ≤ 1.10×: {})",
            verdict(ratio <= 1.1)
        );
        let (single_rate, single_failures) =
            warm(&client, &emulator, &single[0], tenants, &args).await;
        println!(
            "warm req/s, 1 gateway alone:       {single_rate:.0} ({single_failures} failed)"
        );
        for (index, address) in three.iter().enumerate() {
            let (rate, failures) = warm(&client, &emulator, address, tenants, &args).await;
            let change = (rate - single_rate) / single_rate.max(1.0) * 100.0;
            println!(
                "warm req/s, replica {} of 3:        {rate:.0} ({change:+.1} %; target within \
                 10 %: {}; {failures} failed)",
                index + 1,
                verdict(change >= -10.0)
            );
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    drop(redis);
    result
}
