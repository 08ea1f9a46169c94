//! The async runtime both binaries run on: tokio's multi-threaded scheduler, with the number of
//! its worker threads a setting like any other (checked at start, listed in `--help`).

/// How many threads run the service's tasks.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RuntimeArgs {
    /// Threads that run requests (the async runtime's workers). Unset: the container's CPU
    /// limit (its cgroup quota, rounded down, at least 1), else the machine's cores. Fewer
    /// threads hand less work between threads and so cost less CPU per request where the
    /// replica shares its cores with the database or other busy processes; one thread uses at
    /// most one core.
    #[arg(
        long,
        env = "TOKIO_WORKER_THREADS",
        global = true,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub worker_threads: Option<u16>,
}

impl RuntimeArgs {
    /// The runtime, with I/O and timers. Left unset, the worker count is tokio's own default,
    /// which follows the CPU limit as described above; the variable it would read instead has
    /// been checked here already (tokio panics on a bad one).
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if let Some(workers) = self.worker_threads {
            builder.worker_threads(workers.into());
        }
        builder.build()
    }
}

/// The worker threads of the runtime this runs on (for the start-up line: the count an
/// unset `TOKIO_WORKER_THREADS` came to).
pub fn worker_threads() -> usize {
    tokio::runtime::Handle::current().metrics().num_workers()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    fn parse(args: &[&str]) -> Result<RuntimeArgs, clap::Error> {
        Cli::try_parse_from(["binary"].iter().chain(args)).map(|cli| cli.runtime)
    }

    #[test]
    fn the_runtime_has_the_worker_threads_asked_for() {
        for workers in [1u16, 3] {
            let args = parse(&["--worker-threads", &workers.to_string()]).unwrap();
            let runtime = args.build().unwrap();
            assert_eq!(runtime.metrics().num_workers(), usize::from(workers));
        }
    }

    #[test]
    fn zero_or_a_non_number_is_refused_with_the_setting_named() {
        for bad in ["0", "two", "-1"] {
            let arg = format!("--worker-threads={bad}");
            let error = parse(&[&arg]).unwrap_err().to_string();
            assert!(error.contains("--worker-threads"), "{bad}: {error}");
        }
    }
}
