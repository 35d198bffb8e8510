//! The `tenantd` binary: parse the command line, set up tracing, hand over.

use std::process::ExitCode;

use clap::Parser;
use tenantd::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Client subcommands print their results on stdout, where log lines would be in the way.
    if matches!(cli.command, Command::Serve(_) | Command::Migrate(_) | Command::Dev(_)) {
        tenantd::telemetry::init(cli.log_format);
    }
    match cli.command {
        Command::Serve(args) => tenantd::startup::serve((*args).into()).await.map(|()| ExitCode::SUCCESS),
        Command::Dev(args) => tenantd::dev::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate(args) => tenantd::db::migrations::run_command(args).await.map(|()| ExitCode::SUCCESS),
        Command::Health(args) => Ok(tenantd::client::health(args).await),
        Command::Tenants(args) => Ok(tenantd::client::tenants(args).await),
        Command::Keys(args) => Ok(tenantd::client::keys(args).await),
        Command::Operators(args) => Ok(tenantd::client::operators(args).await),
        Command::Operations(args) => Ok(tenantd::client::operations(args).await),
        Command::Resolve(args) => Ok(tenantd::client::resolve(args).await),
        Command::Events(args) => Ok(tenantd::client::events::run(args).await),
    }
}
