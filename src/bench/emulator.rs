//! Benchmark of the emulator's sustained score calls per second over TLS (stub).

/// Options of `scoregate bench emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorBenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: EmulatorBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
