fn main() -> std::process::ExitCode {
    ecointegra_node::cli::main()
}
