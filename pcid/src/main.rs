//! `pcid`: enumerate PCI functions, serve their drivers, relay shutdown.
//! On Linux and the simulated machine it spawns the drivers; on Redox it is a
//! drop-in for Redox's pcid. See `pcid --help` and the library documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match pcid::cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pcid: {e} (pcid --help shows the usage)");
            return ExitCode::from(2);
        }
    };
    let args = match command {
        pcid::cli::Command::Help => {
            println!("{}", pcid::cli::USAGE);
            return ExitCode::SUCCESS;
        }
        pcid::cli::Command::Version => {
            println!("pcid {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        pcid::cli::Command::Run(args) => args,
    };
    let level = match args.verbosity {
        // Redox's hwd starts pcid without arguments; log what Redox's pcid
        // logs (every function found) there.
        0 if cfg!(target_os = "redox") => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
    match pcid::run(&args) {
        Ok(reason) => {
            log::info!("pcid stopped: {reason:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pcid: {e}");
            ExitCode::FAILURE
        }
    }
}
