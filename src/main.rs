//! The `driftwatch` binary: wiring only. Parse the command line, load and
//! validate settings, set up logging, build the pipeline, run, exit.

mod api;
mod cli;
mod commands;
mod demo_receiver;
mod output;
mod reference;
mod report;
mod rules;
mod settings;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `driftwatch … | head` closes stdout early: stop quietly, as a process
    // killed by SIGPIPE would, instead of reporting a panic
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .payload_as_str()
            .is_some_and(|m| m.contains("Broken pipe"))
        {
            std::process::exit(141);
        }
        default_hook(info)
    }));
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
    driftwatch_sql::cache::FileCache::set_shared_budget(settings.engine.sql.history_cache_bytes);
    match commands::run(cli.command, &settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
