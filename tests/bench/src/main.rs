use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = ecointegra_bench::BenchArgs::parse();
    ecointegra_node::telemetry::trace::init_logging();
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
