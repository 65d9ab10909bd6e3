//! Benchmark of the controls routes: warm `GET /tenants/{id}/controls` and warm `GET /controls`
//! over 1,000 tenants (latency, one client), the profile calls a cold `/controls` over 1,000
//! tenants makes (per tenant, pages counted, and the emulator's 429s), and the resident memory
//! of a gateway process with 10,000 warm tenants, all three metrics and their controls cached.
//! Each figure is printed beside its target (issue 22), per round and then as the median and
//! spread of the rounds.
//!
//! The gateway is this binary's `serve` as a process of its own, history on (the default, and
//! what tells each snapshot's controls to the per-control history), with `[upstream]`'s Graph
//! limits at their defaults; the emulator runs in this process with Defender's and Graph's
//! documented quotas on, so that "within Graph's limits" is Graph's own answer: any 429 is
//! counted. A round runs the 1,000-tenant phases, then the memory phase, each with a fresh
//! emulator and gateway: the figures of one kind are taken in alternating rounds, not back to
//! back. Each phase is bounded in time.

use super::gateway::{drive, percentile, resident_mib, GatewayProcess};
use crate::emulator::{Emulator, EmulatorOptions, LatencyRange};
use crate::upstream::UpstreamSettings;
use anyhow::Context;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `scoregate bench controls`.
#[derive(Debug, clap::Args)]
pub struct ControlsBenchArgs {
    /// Tenants of the `/controls` phases.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Tenants of the memory phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub memory_tenants: usize,
    /// Rounds; each runs every phase once, with a fresh emulator and gateway.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How long each warm phase drives requests, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Latency the emulator adds to every call of the `/controls` phases, milliseconds (the
    /// memory phase has none).
    #[arg(long, value_name = "MIN..MAX", default_value = "50..150")]
    pub latency_ms: LatencyRange,
    /// `[upstream] max_in_flight` of the gateway.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// `[history] enabled` of the gateway (on by default, as the memory target is stated).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub history: bool,
    /// `[history] controls` of the gateway: the per-control history and its back-fill.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub control_history: bool,
}

/// Longest a cold fan-out, a memory warm-up or a wait for quiet may take.
const PHASE_BOUND: Duration = Duration::from_secs(300);

/// Concurrent `/tenants/{id}/controls` requests of the memory warm-up.
const WARM_UP_CONCURRENCY: usize = 32;

/// The settings of every gateway of this bench, after `bench gateway`'s: all three metrics, and
/// Graph's per-tenant rate at the gateway's default (not raised, as `bench gateway` does).
fn settings(args: &ControlsBenchArgs) -> Vec<(String, String)> {
    let defaults = UpstreamSettings::default();
    vec![
        (
            "SCOREGATE__HISTORY__CONTROLS".to_owned(),
            args.control_history.to_string(),
        ),
        (
            "SCOREGATE__UPSTREAM__METRICS".to_owned(),
            r#"["device","exposure","secure"]"#.to_owned(),
        ),
        (
            "SCOREGATE__UPSTREAM__GRAPH_REQUESTS_PER_MINUTE".to_owned(),
            defaults.graph_requests_per_minute.to_string(),
        ),
    ]
}

/// An emulator with the documented quotas on (the default options).
async fn emulator(tenants: usize, latency: Option<LatencyRange>) -> anyhow::Result<Emulator> {
    Emulator::start(EmulatorOptions {
        tenants,
        latency,
        workers: 2,
        ..EmulatorOptions::default()
    })
    .await
    .context("cannot start the emulator")
}

/// Longest the memory phase waits for the back-fills of its 10,000 tenants (queued, a few at a
/// time) before it measures.
const BACKFILL_BOUND: Duration = Duration::from_secs(1200);

/// Waits until the emulator has seen no call for a second (the back-fills and profile fetches
/// the first readings start in the background are done), at most [`PHASE_BOUND`].
async fn settle(emulator: &Emulator) {
    settle_within(emulator, PHASE_BOUND).await;
}

/// [`settle`], at most `bound`.
async fn settle_within(emulator: &Emulator, bound: Duration) {
    let started = Instant::now();
    let mut last = emulator.stats().total;
    while started.elapsed() < bound {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = emulator.stats().total;
        if now == last {
            return;
        }
        last = now;
    }
}

/// `met` or `MISSED`, for a figure against its target.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The figures of the 1,000-tenant phases of one round.
struct RoutesFigures {
    tenant_p50: f64,
    tenant_p99: f64,
    list_p50: f64,
    list_p99: f64,
    /// Most profile calls any tenant received during the cold `/controls` and the settling.
    most_profile_calls: u64,
    /// Profile calls of one forced fetch: the pages of a tenant's profiles.
    pages: u64,
    /// Graph and Defender 429s over the whole round.
    responses_429: u64,
    /// Whether the cold `/controls` was complete and every warm request answered 200.
    complete: bool,
}

/// The cold `/controls`, then warm `/tenants/{id}/controls` and `/controls` from one client.
async fn routes_round(
    args: &ControlsBenchArgs,
    client: &reqwest::Client,
) -> anyhow::Result<RoutesFigures> {
    let emu = emulator(args.tenants, Some(args.latency_ms)).await?;
    let gw = GatewayProcess::start_with(
        &emu,
        client,
        args.max_in_flight,
        false,
        args.history,
        &settings(args),
    )
    .await?;
    let list_url = format!("{}/controls?limit=1000&timeout_ms=60000", gw.address);

    // Cold: every tenant's secure score and profiles, through Graph.
    let started = Instant::now();
    let cold: serde_json::Value = client.get(&list_url).send().await?.json().await?;
    let cold_ms = started.elapsed().as_secs_f64() * 1000.0;
    settle(&emu).await;
    let stats = emu.stats();
    let tenants = emu.tenants();
    let calls: Vec<u64> = tenants
        .iter()
        .map(|tenant| stats.tenant(&tenant.slug).control_profile_calls)
        .collect();
    let most_profile_calls = calls.iter().copied().max().unwrap_or(0);
    let fewest = calls.iter().copied().min().unwrap_or(0);
    println!(
        "  cold /controls       {:.0} ms for {} tenants (complete {}, {} failed), {} controls; upstream: {} Graph calls, {} profile calls: {fewest} to {most_profile_calls} per tenant; Graph 429s {}, Defender 429s {}",
        cold_ms,
        cold["tenants"],
        cold["complete"],
        cold["failed"].as_array().map_or(0, Vec::len),
        cold["controls"].as_array().map_or(0, Vec::len),
        stats.total.graph_calls,
        stats.total.control_profile_calls,
        stats.total.graph_responses_429,
        stats.total.responses_429
    );
    if let Some(failed) = cold["failed"].get(0) {
        println!(
            "                       first failure: {}: {}",
            failed["tenant"], failed["error"]["detail"]
        );
    }
    // The history's writes of the back-filled days settle before the warm figures.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Warm: one client, every tenant in turn, then the whole list.
    let before = emu.stats().total;
    let paths: Vec<String> = tenants
        .iter()
        .map(|tenant| format!("{}/tenants/{}/controls", gw.address, tenant.slug))
        .collect();
    let (latencies, failures, elapsed) = drive(client, Arc::new(paths), 1, args.seconds).await;
    let mut complete = cold["complete"] == true && failures == 0 && !latencies.is_empty();
    let (tenant_p50, tenant_p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  warm /tenants/{{id}}/controls  one client: p50 {tenant_p50:.2} ms (target < 2 ms: {}), p99 {tenant_p99:.2} ms, {:.0} req/s ({} failed)",
        verdict(complete && tenant_p50 < 2.0),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures
    );
    let (latencies, failures, elapsed) =
        drive(client, Arc::new(vec![list_url.clone()]), 1, args.seconds).await;
    complete = complete && failures == 0 && !latencies.is_empty();
    let (list_p50, list_p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  warm /controls       {} tenants, one client: p50 {list_p50:.2} ms (target < 50 ms: {}), p99 {list_p99:.2} ms, {:.0} req/s ({} failed)",
        args.tenants,
        verdict(complete && list_p50 < 50.0),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures
    );
    let warm = emu.stats().total;
    println!(
        "                       upstream during the warm phases: {} profile calls, {} Graph calls",
        warm.control_profile_calls - before.control_profile_calls,
        warm.graph_calls - before.graph_calls
    );

    // The pages of one fetch: one tenant's profiles forced (`max_age=0`).
    let slug = &tenants.first().context("no tenant")?.slug;
    let before = emu.stats().tenant(slug).control_profile_calls;
    let forced = client
        .get(format!("{}/tenants/{slug}/controls?max_age=0", gw.address))
        .send()
        .await?;
    anyhow::ensure!(
        forced.status().is_success(),
        "a forced /tenants/{slug}/controls answered {}",
        forced.status()
    );
    let pages = emu.stats().tenant(slug).control_profile_calls - before;
    let total = emu.stats().total;
    let responses_429 = total.graph_responses_429 + total.responses_429;
    println!(
        "  profiles             one fetch is {pages} page(s); most calls of a tenant {most_profile_calls} = {:.1} fetch(es) (target <= 1 per tenant per day + pages, zero 429s: {})",
        most_profile_calls as f64 / pages.max(1) as f64,
        verdict(complete && most_profile_calls <= pages && responses_429 == 0)
    );
    drop(gw);
    emu.stop().await;
    Ok(RoutesFigures {
        tenant_p50,
        tenant_p99,
        list_p50,
        list_p99,
        most_profile_calls,
        pages,
        responses_429,
        complete,
    })
}

/// Every page of `/scores?metric=…`; returns the tenants served.
async fn fetch_scores(
    client: &reqwest::Client,
    address: &str,
    metric: &str,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut ok = 0;
    while started.elapsed() < PHASE_BOUND {
        let mut url = format!("{address}/scores?metric={metric}&limit=1000&timeout_ms=60000");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: serde_json::Value = client.get(&url).send().await?.json().await?;
        // The summary counts the whole query, not the page.
        ok = page["summary"]["ok"].as_u64().unwrap_or(0);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(ok)
}

/// The memory phase: a gateway process, every tenant's three metrics fetched, then each
/// tenant's controls; returns its resident MiB after the scores and after the controls.
async fn memory_round(
    args: &ControlsBenchArgs,
    client: &reqwest::Client,
) -> anyhow::Result<(f64, f64)> {
    let emu = emulator(args.memory_tenants, None).await?;
    let gw = GatewayProcess::start_with(
        &emu,
        client,
        args.max_in_flight,
        false,
        args.history,
        &settings(args),
    )
    .await?;
    let registered = resident_mib(gw.pid).context("no /proc status")?;
    let mut served = Vec::new();
    for metric in ["device", "exposure", "secure"] {
        served.push(fetch_scores(client, &gw.address, metric).await?);
    }
    let scores = steady_resident_mib(&emu, gw.pid).await?;
    let urls: Vec<String> = emu
        .tenants()
        .iter()
        .map(|tenant| format!("{}/tenants/{}/controls", gw.address, tenant.slug))
        .collect();
    let controls = tokio::time::timeout(
        PHASE_BOUND,
        futures::stream::iter(urls)
            .map(|url| async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success())
            })
            .buffer_unordered(WARM_UP_CONCURRENCY)
            .filter(|ok| std::future::ready(*ok))
            .count(),
    )
    .await
    .context("the controls warm-up took too long")?;
    let warm = steady_resident_mib(&emu, gw.pid).await?;
    let stats = emu.stats().total;
    println!(
        "  memory               gateway process alone, {} tenants, history {}, control history {}: {registered:.1} MiB registered, {scores:.1} MiB with the three metrics' scores, {warm:.1} MiB with device/exposure/secure scores of {}/{}/{} tenants and the controls of {controls} cached (target <= 160 MiB: {}); upstream: {} profile calls, Graph 429s {}, Defender 429s {}",
        args.memory_tenants,
        if args.history { "on" } else { "off" },
        if args.control_history { "on" } else { "off" },
        served[0],
        served[1],
        served[2],
        verdict(warm <= 160.0),
        stats.control_profile_calls,
        stats.graph_responses_429,
        stats.responses_429
    );
    drop(gw);
    emu.stop().await;
    Ok((scores, warm))
}

/// The resident MiB of process `pid` in the steady state, as `bench gateway` measures it: the
/// background back-fills and profile fetches done, the history's buffer drained, freed pages
/// handed back (jemalloc, within a second).
async fn steady_resident_mib(emulator: &Emulator, pid: u32) -> anyhow::Result<f64> {
    settle_within(emulator, BACKFILL_BOUND).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    resident_mib(pid).context("no /proc status")
}

/// `median (min–max over N rounds)` of `values`.
fn spread(values: &[f64], unit: &str) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (sorted.first(), sorted.last()) {
        (Some(min), Some(max)) => format!(
            "median {:.2} {unit} ({min:.2}–{max:.2} over {} rounds)",
            sorted[sorted.len() / 2],
            sorted.len()
        ),
        _ => "not measured".to_owned(),
    }
}

/// The median of `values` (0 when empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ControlsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tenants > 0 && args.rounds > 0 && args.max_in_flight > 0,
        "--tenants, --rounds and --max-in-flight must be at least 1"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()?;
    println!("scoregate bench controls");
    println!(
        "  {} tenants, {} for memory, Graph latency {}..{} ms, max_in_flight {}, {} rounds, history {}, control history {}",
        args.tenants,
        args.memory_tenants,
        args.latency_ms.min_ms,
        args.latency_ms.max_ms,
        args.max_in_flight,
        args.rounds,
        args.history,
        args.control_history
    );
    let mut routes = Vec::new();
    let mut memory = Vec::new();
    let mut memory_scores = Vec::new();
    for round in 1..=args.rounds {
        println!("round {round} of {}", args.rounds);
        match routes_round(&args, &client).await {
            Ok(figures) => routes.push(figures),
            Err(error) => println!("  /controls phases not measured: {error:#}"),
        }
        if args.memory_tenants > 0 {
            match memory_round(&args, &client).await {
                Ok((scores, warm)) => {
                    memory_scores.push(scores);
                    memory.push(warm);
                }
                Err(error) => println!("  memory not measured: {error:#}"),
            }
        }
    }

    let of = |figure: fn(&RoutesFigures) -> f64| routes.iter().map(figure).collect::<Vec<_>>();
    // A figure of a round with failures is not the figure of warm tenants: no verdict is met.
    let complete = !routes.is_empty() && routes.iter().all(|f| f.complete);
    let tenant_p50 = of(|f| f.tenant_p50);
    let list_p50 = of(|f| f.list_p50);
    println!("summary");
    println!(
        "warm /tenants/{{id}}/controls  p50 {} (target < 2 ms: {}); p99 {}",
        spread(&tenant_p50, "ms"),
        verdict(complete && median(&tenant_p50) < 2.0),
        spread(&of(|f| f.tenant_p99), "ms")
    );
    println!(
        "warm /controls, {} tenants  p50 {} (target < 50 ms: {}); p99 {}",
        args.tenants,
        spread(&list_p50, "ms"),
        verdict(complete && median(&list_p50) < 50.0),
        spread(&of(|f| f.list_p99), "ms")
    );
    let within = routes
        .iter()
        .all(|f| f.most_profile_calls <= f.pages && f.responses_429 == 0);
    println!(
        "cold /controls, {} tenants  most profile calls of a tenant {}, pages of a fetch {}, {} (target <= 1 fetch per tenant per day + pages, zero 429s: {})",
        args.tenants,
        spread(&of(|f| f.most_profile_calls as f64), "calls"),
        spread(&of(|f| f.pages as f64), "pages"),
        spread(&of(|f| f.responses_429 as f64), "429s"),
        verdict(complete && within)
    );
    if args.memory_tenants > 0 {
        println!(
            "memory, {} warm tenants, three metrics and controls, history {}  {} (target <= 160 MiB: {}); after the scores alone {}",
            args.memory_tenants,
            if args.history { "on" } else { "off" },
            spread(&memory, "MiB"),
            verdict(!memory.is_empty() && median(&memory) <= 160.0),
            spread(&memory_scores, "MiB")
        );
    }
    Ok(())
}
