//! The emulator (stub; see issue 2).

/// Options of `scoregate emulate`.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {}

/// Runs `scoregate emulate`.
pub async fn run_cli(_args: EmulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
