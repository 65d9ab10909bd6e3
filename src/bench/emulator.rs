//! Benchmark of the emulator's sustained score calls per second over TLS.
//!
//! Starts the emulator in-process (quotas off), obtains one token per tenant, then drives
//! `GET /api/configurationScore` from `concurrency` tasks sharing one reqwest client (a
//! connection pool, HTTP/1.1 keep-alive, TLS 1.3) for a fixed time, and prints calls/second
//! and latency percentiles. Client and emulator share the machine's cores, so the figure is a
//! lower bound of what the emulator alone sustains.

use crate::emulator::{Emulator, EmulatorOptions, LatencyRange};
use crate::wire::DEFENDER_SCOPE;
use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `scoregate bench emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorBenchArgs {
    /// How long to drive score calls, seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent client tasks (and pooled connections).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tenants to spread calls over (one token each).
    #[arg(long, default_value_t = 100)]
    pub tenants: usize,
    /// Emulator worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Latency the emulator adds to every call, milliseconds (`50..150`); none by default.
    #[arg(long, value_name = "MIN..MAX")]
    pub latency_ms: Option<LatencyRange>,
}

/// What one client task measured.
#[derive(Default)]
struct TaskResult {
    /// Latency of each successful call, microseconds.
    latencies_us: Vec<u32>,
    /// Calls that failed or were not 200.
    errors: u64,
}

fn percentile(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1_000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: EmulatorBenchArgs) -> anyhow::Result<()> {
    if args.seconds == 0 || args.concurrency == 0 || args.tenants == 0 {
        bail!("--seconds, --concurrency and --tenants must be at least 1");
    }
    let emulator = Emulator::start(EmulatorOptions {
        tenants: args.tenants,
        quota_per_minute: None,
        quota_per_hour: None,
        latency: args.latency_ms,
        workers: args.workers,
        ..EmulatorOptions::default()
    })
    .await
    .context("cannot start the emulator")?;
    let ca = reqwest::Certificate::from_pem(emulator.ca_cert_pem().as_bytes())
        .context("the emulator's CA")?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;

    let mut tokens = Vec::with_capacity(args.tenants);
    for tenant in emulator.try_tenants()? {
        let Some(secret) = tenant.credential.secret() else {
            continue;
        };
        tokens.push(defender_token(&client, &emulator, &tenant, secret).await?);
    }
    let tokens = Arc::new(tokens);
    let url = Arc::new(emulator.score_url());
    println!(
        "scoregate bench emulator: {} s, {} concurrent clients, {} tenants, {} emulator workers{}",
        args.seconds,
        args.concurrency,
        tokens.len(),
        args.workers,
        args.latency_ms
            .map(|range| format!(", latency {range} ms"))
            .unwrap_or_default()
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|task| {
            let client = client.clone();
            let tokens = tokens.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut result = TaskResult::default();
                let mut turn = task;
                while Instant::now() < deadline {
                    let token = &tokens[turn % tokens.len()];
                    turn += 1;
                    let sent = Instant::now();
                    let ok = match client.get(url.as_str()).bearer_auth(token).send().await {
                        Ok(response) => {
                            let status = response.status();
                            response.bytes().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        let micros = sent.elapsed().as_micros();
                        result
                            .latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    } else {
                        result.errors += 1;
                    }
                }
                result
            })
        })
        .collect();

    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let result = task.await.context("a client task failed")?;
        latencies.extend(result.latencies_us);
        errors += result.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let calls = latencies.len();
    let counted = emulator.stats().total;
    emulator.stop().await;

    println!("  score calls    {calls} ok, {errors} failed");
    println!(
        "  sustained      {:.0} calls/s over TLS",
        calls as f64 / elapsed
    );
    println!(
        "  latency        p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "  emulator saw   {} score calls, {} token requests, max {} in flight",
        counted.score_calls, counted.token_requests, counted.max_concurrent
    );
    Ok(())
}

/// A Defender access token from the emulator's token endpoint for one tenant's secret (the
/// benchmarks call the emulator directly, as a client of Defender would).
pub(crate) async fn defender_token(
    client: &reqwest::Client,
    emulator: &Emulator,
    tenant: &crate::emulator::EmulatedTenant,
    secret: &secrecy::SecretString,
) -> anyhow::Result<String> {
    let client_id = tenant.client_id.to_string();
    let answer: crate::wire::TokenResponse = client
        .post(emulator.token_url(tenant.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.expose_secret()),
            ("scope", DEFENDER_SCOPE),
        ])
        .send()
        .await
        .context("token request")?
        .error_for_status()
        .context("token request refused")?
        .json()
        .await
        .context("token response")?;
    Ok(answer.access_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1_000).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
