//! The gateway as a process of its own (this binary's `serve`, killed on drop), as nginx runs:
//! its figures are the gateway's alone. The memory phase measures its resident memory with
//! 10,000 tenants registered, then warm.

use super::{overrides, write_config, TempDir};
use crate::emulator::Emulator;
use anyhow::Context;
use std::time::{Duration, Instant};

/// Resident memory of process `pid`, in MiB (Linux `/proc/PID/status`).
pub(crate) fn resident_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resident memory of a gateway process, registered and then warm.
pub(super) struct MemoryFigures {
    pub(super) registered: f64,
    pub(super) warm: f64,
    pub(super) cached: u64,
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
        let address = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = client
                .get(format!("{address}/healthz"))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the gateway process did not answer /healthz within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            address,
            pid: child.0.id(),
            _child: child,
            _dir: dir,
        })
    }
}

/// Starts a gateway process (authentication off) in front of `emulator`, fetches every tenant
/// once, and reads its resident memory.
pub(super) async fn memory(
    emulator: &Emulator,
    client: &reqwest::Client,
    max_in_flight: usize,
    history: bool,
) -> anyhow::Result<MemoryFigures> {
    let gateway = GatewayProcess::start(emulator, client, max_in_flight, false, history).await?;
    let (pid, address) = (gateway.pid, &gateway.address);
    let started = Instant::now();
    let registered = resident_mib(pid).context("no /proc status")?;
    let mut cursor: Option<String> = None;
    let mut cached = 0u64;
    // Every tenant fetched once, page by page (bounded to two minutes).
    while started.elapsed() < Duration::from_secs(120) {
        let mut url = format!("{address}/scores?limit=1000&timeout_ms=60000");
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
    // The steady state, not the burst: the history writer drains its buffer, and jemalloc
    // hands the pages the fetches freed back to the system within a second (src/main.rs).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warm = resident_mib(pid).context("no /proc status")?;
    Ok(MemoryFigures {
        registered,
        warm,
        cached,
    })
}
