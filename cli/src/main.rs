//! `cairn`: the analyst CLI over the collector's HTTP API.

use clap::Parser;

fn main() {
    let cli = cairn_cli::Cli::parse();
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(cairn_cli::run(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        },
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            2
        }
    };
    std::process::exit(code);
}
