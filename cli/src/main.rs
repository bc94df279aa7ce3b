//! `cairn`: the analyst CLI over the collector's HTTP API.

use clap::Parser;

fn main() {
    // `cairn … | head -1`: end quietly when the reader goes away, as other shell tools do,
    // instead of a panic on the next write to stdout.
    // SAFETY: setting a signal's disposition to its default, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cairn_cli::Cli::parse();
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(cairn_cli::run(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                cairn_cli::code_of(&e)
            }
        },
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            cairn_cli::Exit::Error.code()
        }
    };
    std::process::exit(code);
}
