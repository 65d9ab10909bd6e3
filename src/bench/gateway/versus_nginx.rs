//! The `nginx` phase: the warm `/tenants/{id}/score` with an API key (the gateway as a process
//! of its own, its log on to a file) against nginx's `proxy_cache` serving the same cached
//! Defender answer, in both configurations of [`Keepalive`] (access log on). The figure with
//! a target is wrk's (`wrk -t2 -c64`): rounds alternating the three servers, each round's
//! ratio per configuration, their median and spread, so that one burst of other work on the
//! shared cores does not decide it. The bench's own client (reqwest) gives a secondary figure.

use super::super::nginx::{self, Keepalive, Nginx};
use super::{drive, emulator, percentile, GatewayBenchArgs, GatewayProcess, BENCH_KEY};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Rounds of the wrk comparison (each drives every server for `--seconds`).
const WRK_ROUNDS: usize = 3;

/// Connections of wrk and of the bench's client.
const CONNECTIONS: usize = 64;

/// The nginx configurations, in the order of a round's first rotation.
const CONFIGURATIONS: [Keepalive; 2] = [Keepalive::Unbounded, Keepalive::Default];

/// One server the rounds drive: its URL and the bearer token it takes.
struct Target {
    name: String,
    url: String,
    token: String,
}

/// A client sending `Authorization: Bearer TOKEN`.
fn authorized(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Fetches `target` once (warming its cache, and checking the token works); returns the
/// requests per second, p50 and p99 of the bench's client on it for `seconds`.
async fn bench_client(target: &Target, seconds: u64) -> anyhow::Result<(f64, f64, f64, u64)> {
    let client = authorized(&target.token)?;
    let first = client.get(&target.url).send().await?;
    anyhow::ensure!(
        first.status().is_success(),
        "{} answered {}",
        target.name,
        first.status()
    );
    let (latencies, failures, elapsed) = drive(
        &client,
        Arc::new(vec![target.url.clone()]),
        CONNECTIONS,
        seconds,
    )
    .await;
    Ok((
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures,
    ))
}

/// Runs the phase and prints its figures.
pub(super) async fn run(args: &GatewayBenchArgs) -> anyhow::Result<()> {
    let emu = emulator(args.tenants, Some(args.latency_ms)).await?;
    // A process of its own, as nginx is: the bench's client does not share its runtime.
    let gw = GatewayProcess::start(
        &emu,
        &reqwest::Client::new(),
        args.max_in_flight,
        true,
        true,
    )
    .await?;
    let slug = emu
        .tenants()
        .first()
        .map(|tenant| tenant.slug.clone())
        .context("no tenant")?;
    let gateway = Target {
        name: "gateway".to_owned(),
        url: format!("{}/tenants/{slug}/score", gw.address),
        token: BENCH_KEY.to_owned(),
    };
    let (rps, p50, p99, failures) = bench_client(&gateway, args.seconds).await?;
    println!(
        "warm /tenants/{{id}}/score, API key, bench client (secondary)  gateway {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({failures} failed, {CONNECTIONS} clients)"
    );
    let gateway_rps = rps;
    let Some(binary) = nginx::on_path("nginx") else {
        println!("nginx             not on PATH: no comparison (apt-get install nginx)");
        return Ok(());
    };
    let token = nginx::defender_token(&emu).await?;
    // Both configurations at once, each idle while the other is driven.
    let mut servers = Vec::new();
    let mut targets = vec![gateway];
    for keepalive in CONFIGURATIONS {
        let server = Nginx::start(&binary, &emu, 2, keepalive)?;
        targets.push(Target {
            name: format!("nginx ({})", keepalive.label()),
            url: format!(
                "{}{}",
                server.address,
                crate::wire::CONFIGURATION_SCORE_PATH
            ),
            token: token.clone(),
        });
        servers.push(server);
    }
    for target in &targets[1..] {
        let (rps, p50, p99, failures) = bench_client(target, args.seconds).await?;
        println!(
            "                  bench client (secondary): {} {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({failures} failed); gateway / nginx {:.2}x",
            target.name,
            gateway_rps / rps
        );
    }
    if nginx::on_path("wrk").is_none() {
        println!("                  wrk not on PATH: no wrk rounds, no figure beside the target (apt-get install wrk)");
        return Ok(());
    }
    // ratios[c][r]: gateway / nginx configuration c in round r.
    let mut ratios = vec![Vec::new(); CONFIGURATIONS.len()];
    for round in 0..WRK_ROUNDS {
        let mut rps = vec![0.0; targets.len()];
        // Rotated each round: no server always runs first or right after another one.
        for step in 0..targets.len() {
            let index = (round + step) % targets.len();
            let target = &targets[index];
            rps[index] = nginx::wrk(&target.url, &target.token, CONNECTIONS, args.seconds)
                .with_context(|| format!("wrk gave no figure for {}", target.name))?;
        }
        let mut line = format!(
            "                  wrk -t2 -c{CONNECTIONS} -d{}s, round {} of {WRK_ROUNDS}: gateway {:.0} req/s",
            args.seconds,
            round + 1,
            rps[0]
        );
        for (configuration, nginx_rps) in rps[1..].iter().enumerate() {
            let ratio = rps[0] / nginx_rps;
            ratios[configuration].push(ratio);
            line.push_str(&format!(
                ", {} {nginx_rps:.0} req/s ({ratio:.2}x)",
                targets[configuration + 1].name
            ));
        }
        println!("{line}");
    }
    for (keepalive, mut ratios) in CONFIGURATIONS.into_iter().zip(ratios) {
        let rounds: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
        ratios.sort_by(f64::total_cmp);
        let (Some(min), Some(max)) = (ratios.first(), ratios.last()) else {
            continue;
        };
        println!(
            "warm score vs nginx ({}): wrk gateway / nginx, rounds {}, median {:.2}x, spread {min:.2}-{max:.2}x (target >= 1.2x)",
            keepalive.label(),
            rounds.join(", "),
            ratios[ratios.len() / 2]
        );
    }
    drop(servers);
    emu.stop().await;
    Ok(())
}
