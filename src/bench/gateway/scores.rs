//! The in-process phases of `bench gateway` (emulator, gateway and client in this process, on
//! the same cores: conservative figures): cold `/scores` and the fan-out alone, warm `/scores`
//! from one client and from many, warm single-tenant reads, a cold `/scores?metric=secure`
//! through Microsoft Graph, and single flight under 1,000 concurrent cold requests.

use super::{drive, emulator, gateway, percentile, GatewayBenchArgs};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the phases and prints their figures.
pub(super) async fn run(args: &GatewayBenchArgs, client: &reqwest::Client) -> anyhow::Result<()> {
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
        drive(client, Arc::new(vec![all.clone()]), 1, args.seconds.min(2)).await;
    println!(
        "warm /scores      one client: p50 {:.2} ms (target < 1 ms), p99 {:.2} ms, {:.0} req/s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    let (latencies, failures, elapsed) = drive(
        client,
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
        drive(client, Arc::new(paths), args.concurrency * 4, args.seconds).await;
    println!(
        "warm /tenants/{{id}}/score  {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} failed, {} clients)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures,
        args.concurrency * 4
    );

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
    // The secure score back-fills the cold phase started, before the emulator goes: they run
    // in this process and would otherwise fail, and log, against an emulator that is gone.
    if !graph_still(&emu, Duration::from_secs(120)).await {
        println!("                  (secure score back-fills still running after 120 s)");
    }
    drop(cold_gw);
    drop(gw);
    emu.stop().await;

    Ok(())
}

/// Waits (at most `bound`) until the emulator's Graph call counter has stood still for two
/// seconds: the secure score back-fills have ended. Returns whether it did.
async fn graph_still(emu: &crate::emulator::Emulator, bound: Duration) -> bool {
    let started = Instant::now();
    let mut last = emu.stats().total.graph_calls;
    let mut still_since = Instant::now();
    while started.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let calls = emu.stats().total.graph_calls;
        if calls != last {
            last = calls;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(2) {
            return true;
        }
    }
    false
}
