use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = micemu::cli::Cli::parse();
    match micemu::run::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("micemu: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
