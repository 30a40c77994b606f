use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = ecointegra_bench::BenchArgs::parse();
    // The baseline's Kafka clients run with the nodes' allocator settings.
    let untuned = ecointegra_node::malloc::tune();
    ecointegra_node::telemetry::trace::init_logging();
    if let Some(reason) = untuned {
        tracing::warn!("{reason}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ecointegra-bench: no async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ecointegra_bench::run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ecointegra-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
