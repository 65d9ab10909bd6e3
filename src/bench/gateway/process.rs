//! The gateway as a process of its own (this binary's `serve`, killed on drop), as nginx runs:
//! its figures are the gateway's alone. Also what the phases read of such a process: its
//! resident memory (once, or sampled in the background for a peak), a figure of its
//! `/metrics`, and every tenant's score of a metric fetched once through `/scores` pages.

use super::{overrides, write_config, TempDir};
use crate::emulator::Emulator;
use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of process `pid`, in KiB (Linux `/proc/PID/status`).
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Pins every thread of process `pid` and of its children (nginx's workers) to CPU `core`
/// (`taskset -a -p -c CORE PID`, util-linux).
pub(crate) fn pin_to_core(pid: u32, core: usize) -> anyhow::Result<()> {
    let taskset = crate::bench::nginx::on_path("taskset").context("taskset is not on PATH")?;
    for process in std::iter::once(pid).chain(super::usage::child_processes(pid)) {
        let status = std::process::Command::new(&taskset)
            .args(["-a", "-p", "-c", &core.to_string(), &process.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .context("cannot run taskset")?;
        anyhow::ensure!(status.success(), "taskset could not pin process {process}");
    }
    Ok(())
}

/// Resident memory of process `pid`, in MiB (Linux `/proc/PID/status`).
pub(crate) fn resident_mib(pid: u32) -> Option<f64> {
    resident_kib(pid).map(|kib| kib as f64 / 1024.0)
}

/// Samples the resident memory of a process in the background (the first sample at once)
/// and keeps the highest; stops on drop. A peak between two samples goes unseen: the period
/// is the figure's resolution.
pub(crate) struct RssSampler {
    pid: u32,
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Samples process `pid` every `period`.
    pub(crate) fn start(pid: u32, period: Duration) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(resident_kib(pid).unwrap_or(0)));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                if let Some(kib) = resident_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
            }
        });
        Self {
            pid,
            peak_kib,
            task,
        }
    }

    /// The highest resident memory sampled so far, a sample taken now included, in MiB.
    pub(crate) fn peak_mib(&self) -> f64 {
        if let Some(kib) = resident_kib(self.pid) {
            self.peak_kib.fetch_max(kib, Ordering::Relaxed);
        }
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sum of the samples of the gateway's `/metrics` whose line starts with `prefix` (a
/// family name and the start of its labels, e.g. `scoregate_upstream_calls_total{service="graph"`);
/// 0 when none does.
pub(crate) async fn metric_sum(
    client: &reqwest::Client,
    address: &str,
    prefix: &str,
) -> anyhow::Result<f64> {
    let response = client.get(format!("{address}/metrics")).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "/metrics answered {}",
        response.status()
    );
    let text = response.text().await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Fetches every tenant's `metric` once through `/scores` pages of 1,000 (bounded to
/// `bound`); returns how many answered ok (the last page's summary, which counts every
/// tenant of the portfolio).
pub(crate) async fn fetch_every_tenant(
    client: &reqwest::Client,
    address: &str,
    metric: &str,
    bound: Duration,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    loop {
        anyhow::ensure!(
            started.elapsed() < bound,
            "/scores?metric={metric} pages took more than {} s",
            bound.as_secs()
        );
        let mut url = format!("{address}/scores?metric={metric}&limit=1000&timeout_ms=60000");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = client.get(&url).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "/scores?metric={metric} answered {}",
            response.status()
        );
        let page: serde_json::Value = response.json().await?;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(page["summary"]["ok"].as_u64().unwrap_or(0)),
        }
    }
}

/// A child process this bench started, killed (by its id) on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This binary's `serve` in front of the emulator as a process of its own, like nginx: its
/// figures are the gateway's alone (memory) and its CPU is not shared with the bench's client
/// (throughput). Killed on drop. Its log goes to a file in its scratch directory: logs stay on.
pub(crate) struct GatewayProcess {
    pub(crate) address: String,
    pub(crate) pid: u32,
    _child: ChildGuard,
    _dir: TempDir,
}

impl GatewayProcess {
    /// Starts it (authentication as `auth`, the history as `history`) and waits until its
    /// `/healthz` answers.
    pub(super) async fn start(
        emulator: &Emulator,
        client: &reqwest::Client,
        max_in_flight: usize,
        auth: bool,
        history: bool,
    ) -> anyhow::Result<Self> {
        Self::start_with(emulator, client, max_in_flight, auth, history, &[]).await
    }

    /// [`Self::start`] with `settings` (environment overrides, `SCOREGATE__…`) set after the
    /// bench's own, so that they win.
    pub(crate) async fn start_with(
        emulator: &Emulator,
        client: &reqwest::Client,
        max_in_flight: usize,
        auth: bool,
        history: bool,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let gateway = Self::spawn(emulator, max_in_flight, auth, history, settings)?;
        gateway
            .wait_for(client, "/healthz", Duration::from_secs(60))
            .await?;
        Ok(gateway)
    }

    /// Starts it as [`Self::start_with`] does, without waiting for it to answer.
    pub(super) fn spawn(
        emulator: &Emulator,
        max_in_flight: usize,
        auth: bool,
        history: bool,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("scoregate-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).context("a scratch directory")?;
        let dir = TempDir(dir);
        let path = write_config(emulator, &dir.0)?;
        let port = crate::bench::nginx::free_port()?;
        let log = std::fs::File::create(dir.0.join("gateway.log")).context("the gateway's log")?;
        let child = std::process::Command::new(std::env::current_exe().context("this binary")?)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .envs(overrides(&format!("127.0.0.1:{port}"), max_in_flight, auth))
            .env("SCOREGATE__HISTORY__ENABLED", history.to_string())
            .envs(settings.iter().map(|(key, value)| (key, value)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start `scoregate serve`")?;
        let child = ChildGuard(child);
        Ok(Self {
            address: format!("http://127.0.0.1:{port}"),
            pid: child.0.id(),
            _child: child,
            _dir: dir,
        })
    }

    /// Polls GET `path` every 20 ms until it answers 2xx (within `bound`); returns how long
    /// that took.
    pub(super) async fn wait_for(
        &self,
        client: &reqwest::Client,
        path: &str,
        bound: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let answered = client
                .get(format!("{}{path}", self.address))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if answered {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < bound,
                "the gateway process did not answer {path} within {} s",
                bound.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends it SIGHUP (a configuration reload), by its process id.
    pub(super) fn hang_up(&self) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.pid.to_string()])
            .status()
            .context("cannot run `kill -HUP`")?;
        anyhow::ensure!(status.success(), "`kill -HUP {}` failed", self.pid);
        Ok(())
    }
}
