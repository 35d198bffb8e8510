//! The `tenantd` binary: parse the command line, set up tracing, hand over.

use clap::Parser;
use tenantd::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tenantd::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => tenantd::startup::serve(*args).await,
        Command::Migrate(args) => tenantd::db::migrations::run_command(args).await,
    }
}
