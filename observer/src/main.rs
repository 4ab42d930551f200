//! observer: see which network layer is failing on this host, from passive evidence.

mod cli;
mod events;
mod layers;
mod present;
mod probe;
mod run;

use std::{process::ExitCode, time::Instant};

use clap::Parser as _;

fn main() -> ExitCode {
    let started = Instant::now();
    // Bad flags: clap prints its message and exits 2.
    let cli = cli::Cli::parse();
    match run::run(cli, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("observer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
