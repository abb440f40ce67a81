//! `plaind`: an example driver that takes no part in shutdown.
//!
//! * `plaind` links the protocol and declares [`ShutdownSupport::None`]:
//!   shutdownd records it as `not-supported` without sending it anything.
//! * `plaind --silent` stands for a driver written before the protocol
//!   existed: it never says `Hello` (pcid treats it as not speaking the
//!   protocol once its hello deadline passes). It keeps the channel open and
//!   exits when pcid closes it.

use std::process::ExitCode;

use pcid_interface::driver::{self, NoShutdown};
use pcid_interface::protocol::ShutdownSupport;
use pcid_interface::transport::{DriverChannel, TransportError};

fn run_plain() -> Result<(), String> {
    let (mut conn, function) = driver::connect("plaind", ShutdownSupport::None)
        .map_err(|e| format!("cannot connect to pcid: {e}"))?;
    let address = function.address;
    conn.ready()
        .map_err(|e| format!("{address}: cannot send Ready: {e}"))?;
    match conn.serve(NoShutdown) {
        Ok(outcome) => {
            log::info!("{address}: {outcome:?}");
            Ok(())
        }
        Err(e) => Err(format!("{address}: {e}")),
    }
}

fn run_silent() -> Result<(), String> {
    let mut channel =
        DriverChannel::from_env().map_err(|e| format!("cannot adopt the pcid channel: {e}"))?;
    // Like a driver that predates the protocol: read (and ignore) whatever
    // arrives, never answer, and stop when pcid goes away.
    loop {
        match channel.recv(None) {
            Ok(msg) => log::debug!("silent: ignoring {msg:?}"),
            Err(TransportError::Closed) => return Ok(()),
            Err(e) if !e.is_fatal() => log::debug!("silent: ignoring {e}"),
            Err(e) => return Err(format!("channel: {e}")),
        }
    }
}

/// `Some(silent)`, or `None` after `--help`/`--version`.
fn parse_args() -> Result<Option<bool>, String> {
    use shutdown_tests::cli::lexopt::prelude::*;
    let mut p = shutdown_tests::cli::lexopt::Parser::from_env();
    let mut silent = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("silent") => silent = true,
            Short('h') | Long("help") => {
                println!("usage: plaind [--silent]\n\nAn example driver without shutdown support; --silent: one that never says Hello.");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("{}", shutdown_tests::cli::version_line("plaind"));
                return Ok(None);
            }
            other => return Err(shutdown_tests::cli::unexpected(other)),
        }
    }
    Ok(Some(silent))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let silent = match parse_args() {
        Ok(Some(s)) => s,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plaind: {e} (usage: plaind [--silent])");
            return ExitCode::from(2);
        }
    };
    let result = if silent { run_silent() } else { run_plain() };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plaind: {e}");
            ExitCode::FAILURE
        }
    }
}
