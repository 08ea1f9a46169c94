//! The `task-service` binary: `serve` or `migrate`.

use clap::Parser;
use task_service::config::{Cli, Command};

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
            let telemetry = common::telemetry::init("task-service", &config.telemetry)?;
            let result = serve(*config).await;
            if let Err(error) = &result {
                tracing::error!(error = format!("{error:#}"), "task-service failed");
            }
            telemetry.shutdown();
            result
        }
        Command::Migrate { database, migrate } => {
            migrate
                .apply(&database, task_service::SCHEMA, &task_service::MIGRATOR)
                .await?;
            println!("task-service: migrations applied to schema `tasks`");
            Ok(())
        }
    }
}

async fn serve(config: task_service::Config) -> anyhow::Result<()> {
    let app = task_service::build(config).await?;
    tracing::info!(
        api = %app.api_addr(),
        admin = %app.admin_addr(),
        worker_threads = common::runtime::worker_threads(),
        "task-service listening"
    );
    app.run_until_stopped(common::server::shutdown_signal())
        .await;
    Ok(())
}
