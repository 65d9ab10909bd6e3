//! The command line: one subcommand per job, each a thin call into the library.

use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};

/// scoregate: Defender for Endpoint device secure scores for many tenants, behind one API.
#[derive(Debug, Parser)]
#[command(name = "scoregate", version, about, long_about = None)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the local stand-in for Entra ID and Defender for Endpoint (HTTPS).
    Emulate(crate::emulator::EmulateArgs),
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sustained score calls per second the emulator serves over TLS.
    Emulator(crate::bench::emulator::EmulatorBenchArgs),
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Emulate(args) => crate::emulator::run_cli(args).await,
        Command::Bench(BenchCommand::Emulator(args)) => crate::bench::emulator::run(args).await,
    }
}
