//! The `auth-service` binary: `serve`, `migrate`, or `users …` (operator controls).

use auth_service::config::{Cli, Command};
use clap::Parser;

/// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers across
/// the runtime's threads, and glibc's arenas spent about a tenth of the service's CPU on it
/// (measured in `deploy/bench/RESULTS.md`, run 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.runtime.build()?.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            let telemetry = common::telemetry::init("auth-service", &config.telemetry)?;
            let result = serve(*config).await;
            if let Err(error) = &result {
                tracing::error!(error = format!("{error:#}"), "auth-service failed");
            }
            telemetry.shutdown();
            result
        }
        Command::Migrate { database, migrate } => {
            migrate
                .apply(&database, auth_service::SCHEMA, &auth_service::MIGRATOR)
                .await?;
            println!("auth-service: migrations applied to schema `auth`");
            Ok(())
        }
        Command::Users { database, action } => {
            let log_format = std::env::var("LOG_FORMAT").unwrap_or_else(|_| "json".into());
            let telemetry = common::telemetry::init(
                "auth-service",
                &common::telemetry::TelemetryArgs::local(&log_format),
            )?;
            let result = auth_service::operator::run(&database, &action).await;
            telemetry.shutdown();
            if let Err(error) = result {
                // One line, for a person at `kubectl exec` or a Job's log.
                eprintln!("auth-service users: {error:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

async fn serve(config: auth_service::Config) -> anyhow::Result<()> {
    let app = auth_service::build(config).await?;
    tracing::info!(
        api = %app.api_addr(),
        admin = %app.admin_addr(),
        worker_threads = common::runtime::worker_threads(),
        "auth-service listening"
    );
    app.run_until_stopped(common::server::shutdown_signal())
        .await;
    Ok(())
}
