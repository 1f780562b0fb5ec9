//! The `driftwatch` binary: wiring only. Parse the command line, load and
//! validate settings, set up logging, build the pipeline, run, exit.

mod cli;
mod commands;
mod output;
mod pipeline;
mod settings;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let settings = match settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(
        cli.log_format.unwrap_or(settings.log_format),
        &settings.log_level,
    );
    match commands::run(cli.command, &settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
