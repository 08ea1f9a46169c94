//! `todo-local`: the whole stack on one origin, as the ingress would route it (see the
//! library). `LOCAL_ADDR` (default 127.0.0.1:8080) is bound before anything else starts.

use clap::Parser;
use local_stack::{Args, LocalStack};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_format = std::env::var("LOG_FORMAT").unwrap_or_else(|_| "text".into());
    let telemetry = common::telemetry::init(
        "todo-local",
        &common::telemetry::TelemetryArgs::local(&log_format),
    )?;
    let stack = match LocalStack::build(args).await {
        Ok(stack) => stack,
        Err(error) => {
            // One clear line (with its causes), not a backtrace: this is what a user reads.
            eprintln!("todo-local: {error:#}");
            telemetry.shutdown();
            std::process::exit(1);
        }
    };
    stack.print_banner();
    let served = stack
        .run_until_stopped(common::server::shutdown_signal())
        .await;
    telemetry.shutdown();
    served
}
