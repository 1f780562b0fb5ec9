//! The subcommands.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use driftwatch_ingest::synth::{Synth, SynthConfig};
use driftwatch_ingest::{
    Event, EventParquetWriter, MergedSource, encode_json, format_time, open_file,
};
use tracing::{info, warn};

use crate::cli::{
    AlertsArgs, Command, DemoArgs, GenArgs, ReferenceCommand, ReplayArgs, RulesCommand,
    SilenceCommand, SqlArgs, SqlFormat,
};
use crate::output::ConsoleSummary;
use crate::settings::Settings;
use driftwatch_engine::alerting::{self, RuleSource};
use driftwatch_engine::{Config, HistoryMode, Replay, ReplayOptions, RunSummary, WindowSink};

/// Runs one subcommand.
pub fn run(command: Command, settings: &Settings) -> Result<()> {
    let settings_with_secrets = || settings.with_secrets();
    let with_secrets = || settings_with_secrets().map(|s| s.engine);
    let settings = &settings.engine;
    match command {
        Command::Replay(args) => replay(args, &with_secrets()?),
        Command::Demo(args) => demo(args, &with_secrets()?),
        Command::Gen(args) => gen_file(args),
        Command::Run(args) => run_service(&args, &settings_with_secrets()?),
        #[cfg(feature = "kafka")]
        Command::Produce(args) => produce(&args, settings),
        Command::Reference(ReferenceCommand::Build {
            files,
            model,
            version,
            from,
            until,
            first,
            table,
        }) => {
            let selection =
                crate::reference::selection(from.as_deref(), until.as_deref(), first, table)?;
            crate::reference::build(settings, &files, &model, version.as_deref(), &selection)
                .map(|_| ())
        }
        Command::Reference(ReferenceCommand::List) => crate::reference::list(settings),
        Command::Reference(ReferenceCommand::Show { model, version }) => {
            crate::reference::show(settings, &model, version.as_deref())
        }
        Command::Rules(RulesCommand::Check { dir }) => rules_check(settings, dir),
        Command::Rules(RulesCommand::Test { dir }) => rules_test(settings, dir),
        Command::Sql(args) => sql(settings, &args),
        Command::Report(args) => {
            let engine = alerting::sql_engine(settings, true)?;
            let span = driftwatch_engine::report::Span {
                from: args.from,
                to: args.to,
            };
            let path = write_report(&engine, settings, &args.model, span, &args.out)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Alerts(args) => alerts(settings, &args),
        Command::Silence(command) => silence(settings, command),
    }
}

/// `driftwatch alerts`: what the `alerts` history says.
fn alerts(settings: &Config, args: &AlertsArgs) -> Result<()> {
    let engine = alerting::sql_engine(settings, true)?;
    let view = alerting::alerts(&engine, args.recent)?;
    let mut out = std::io::stdout().lock();
    for (title, batches) in [
        ("current alerts", &view.current),
        ("latest alert events", &view.recent),
    ] {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        writeln!(out, "{title}: {rows}")?;
        if rows > 0 {
            writeln!(out, "{}", crate::output::table_text(batches)?)?;
        }
    }
    writeln!(
        out,
        "(from the history in {}; the service writes it at each checkpoint)",
        settings.data_dir.history().display()
    )?;
    Ok(())
}

/// `driftwatch silence`.
fn silence(settings: &Config, command: SilenceCommand) -> Result<()> {
    use driftwatch_triggers::{Matcher, Silences};
    let path = settings.data_dir.silences();
    let mut silences = Silences::open(&path)?;
    let now = chrono::Utc::now().timestamp_millis();
    let show = |s: &driftwatch_triggers::Silence| {
        let matchers: Vec<String> = s.matchers.iter().map(ToString::to_string).collect();
        format!(
            "{}  {} .. {}  {}  by {}{}",
            &s.id[..12],
            format_time(s.starts_at),
            format_time(s.ends_at),
            matchers.join(" "),
            // typed by anyone who may add a silence: shown as text only
            if s.created_by.is_empty() {
                "-".into()
            } else {
                crate::output::printable(&s.created_by)
            },
            if s.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::output::printable(&s.comment))
            }
        )
    };
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            comment,
            author,
        } => {
            let matchers = matchers
                .iter()
                .map(|m| Matcher::parse(m).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let length = humantime::parse_duration(&duration)
                .with_context(|| format!("--duration {duration:?}: expected e.g. \"2h\""))?;
            let starts_at = match start {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .with_context(|| format!("--start {t:?}: expected RFC 3339"))?
                    .timestamp_millis(),
                None => now,
            };
            let author = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_default();
            let s = silences.add(
                matchers,
                starts_at,
                starts_at.saturating_add(i64::try_from(length.as_millis()).unwrap_or(i64::MAX)),
                &author,
                &comment,
            )?;
            println!("silence {} added: {}", s.id, show(&s));
        }
        SilenceCommand::List { all } => {
            let list: Vec<_> = silences
                .list()
                .iter()
                .filter(|s| all || s.ends_at > now)
                .collect();
            println!("{} silence(s) in {}", list.len(), path.display());
            for s in list {
                println!("{:<7}  {}", s.state(now), show(s));
            }
        }
        SilenceCommand::Expire { id } => {
            let s = silences.expire(&id, now)?;
            println!("silence {} ended: {}", s.id, show(&s));
        }
    }
    Ok(())
}

fn rules_source(settings: &Config, dir: Option<PathBuf>) -> RuleSource {
    RuleSource::Dir(dir.unwrap_or_else(|| settings.sql.rules_dir.clone()))
}

/// `driftwatch rules check`: every error, then a non-zero exit if any.
fn rules_check(settings: &Config, dir: Option<PathBuf>) -> Result<()> {
    let source = rules_source(settings, dir);
    let files = alerting::read_rules(&source)?;
    let engine = alerting::sql_engine(settings, false)?;
    let (rules, errors) = driftwatch_sql::rules::check_all(&engine, &files, &settings.actions);
    for e in &errors {
        eprintln!("error: {e}");
    }
    let RuleSource::Dir(dir) = &source else {
        unreachable!("rules check reads a directory")
    };
    if errors.is_empty() {
        println!(
            "{}: {} rule(s) in {} file(s) OK",
            dir.display(),
            rules.len(),
            files.files.len()
        );
        Ok(())
    } else {
        anyhow::bail!("{}: {} rule error(s)", dir.display(), errors.len())
    }
}

/// `driftwatch rules test`: runs every example; a non-zero exit if any fails.
fn rules_test(settings: &Config, dir: Option<PathBuf>) -> Result<()> {
    let source = rules_source(settings, dir);
    let files = alerting::read_rules(&source)?;
    for e in &files.errors {
        eprintln!("error: {}", driftwatch_sql::Error::from(e));
    }
    let outcomes = driftwatch_sql::testing::run_tests(
        &driftwatch_sql::standard_tables()?,
        &files,
        &settings.actions,
    );
    let mut failed = 0;
    for o in &outcomes {
        if o.problems.is_empty() {
            println!("ok    {}: {}", o.file.display(), o.name);
        } else {
            failed += 1;
            println!("FAIL  {}: {}", o.file.display(), o.name);
            for p in &o.problems {
                println!("        {p}");
            }
        }
    }
    println!("{} example(s), {failed} failed", outcomes.len());
    if failed > 0 || !files.errors.is_empty() {
        anyhow::bail!("rule examples failed");
    }
    Ok(())
}

/// Writes `model`'s report from `engine` to `out`; returns `out`.
fn write_report(
    engine: &driftwatch_sql::Engine,
    settings: &Config,
    model: &str,
    span: driftwatch_engine::report::Span,
    out: &Path,
) -> Result<PathBuf> {
    let report = driftwatch_engine::report::gather(engine, &settings.data_dir, model, span)?;
    let page = crate::report::html(&report, chrono::Utc::now().timestamp_millis());
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_owned())
}

/// `driftwatch sql`: one query over the history.
/// Whether `dir` holds a file, in it or below.
fn holds_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().is_file() || holds_files(&e.path()))
    })
}

/// Says on stderr why a query found no row: no history at all, or which
/// models the history holds (a filter that names none of them).
fn explain_no_rows(settings: &Config, engine: &driftwatch_sql::Engine) {
    let history = settings.data_dir.history();
    if !holds_files(&history) {
        eprintln!(
            "(no history in {}: `driftwatch replay`, `demo` and `run` write it there; \
             data_dir or DRIFTWATCH__DATA_DIR says where)",
            history.display()
        );
        return;
    }
    let models = engine
        .query("SELECT DISTINCT model_id FROM window_summary ORDER BY model_id LIMIT 21")
        .map(|(_, batches)| {
            let mut names = Vec::new();
            for b in &batches {
                for row in 0..b.num_rows() {
                    if let Some(m) = driftwatch_detectors::output::cell::text(b, "model_id", row) {
                        names.push(crate::output::printable(m).into_owned());
                    }
                }
            }
            names
        });
    if let Ok(mut names) = models {
        if names.len() > 20 {
            names.truncate(20);
            names.push("…".into());
        }
        eprintln!(
            "(the history in {} holds the models: {})",
            history.display(),
            names.join(", ")
        );
    }
}

fn sql(settings: &Config, args: &SqlArgs) -> Result<()> {
    let engine = alerting::sql_engine(settings, true)?;
    let (schema, batches) = engine.query(&args.query)?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        explain_no_rows(settings, &engine);
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        SqlFormat::Table => {
            let table = crate::output::table_text(&batches)?;
            if batches.is_empty() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", crate::output::printable(&names.join(" | ")))?;
            } else {
                writeln!(out, "{table}")?;
            }
            writeln!(
                out,
                "{} row(s)",
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            )?;
        }
        SqlFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                writer.write(&arrow::array::RecordBatch::new_empty(schema))?;
            }
            for b in &batches {
                writer.write(b)?;
            }
        }
        SqlFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in &batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// `driftwatch run`: the API, HTTP ingest and the delivery worker on one
/// tokio runtime, Kafka (when configured) on a thread of its own; SIGTERM /
/// SIGINT stop intake, checkpoint every source, drain the outboxes and exit.
fn run_service(args: &crate::cli::RunArgs, settings: &crate::settings::Settings) -> Result<()> {
    use driftwatch_engine::service::{HttpIngest, Shared};
    let started = Instant::now();
    let options = crate::api::ApiOptions {
        listen: settings.api.listen,
        max_body: settings.api.max_body,
        token: std::env::var("DRIFTWATCH_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    crate::api::check_access(&options)?;
    let kafka = settings.kafka_configured;
    if args.exit_at_end && !kafka {
        anyhow::bail!("--exit-at-end reads Kafka topics to their end: configure [kafka]");
    }
    #[cfg(not(feature = "kafka"))]
    if kafka {
        anyhow::bail!(
            "[kafka] is configured but this build has no Kafka support (feature `kafka`)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // bound first: the evidence in notifications links to the address
    // really listened on
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(options.listen))
        .with_context(|| format!("listening on {} (api.listen)", options.listen))?;
    let address = listener.local_addr()?;
    let mut config = settings.engine.clone();
    if config.public_url.is_none() && !address.ip().is_unspecified() {
        config.public_url = Some(format!("http://{address}"));
    }
    let config = &config;
    let stop = tokio_util::sync::CancellationToken::new();
    // embedded defaults: without a rules directory, the bundled rules
    let rules = alerting::configured_source(config, Some(crate::rules::BUNDLED_RULES));
    if matches!(rules, Some(RuleSource::Bundled(_))) {
        info!(dir = %config.sql.rules_dir.display(), "no rules directory (sql.rules_dir): the bundled rules");
    }
    let shared = Shared::new(config, rules, runtime.handle())?;
    let ingest = if settings.api.ingest {
        Some(Arc::new(HttpIngest::start(config, &shared, &stop)?))
    } else {
        None
    };
    #[cfg(feature = "kafka")]
    let consumer = if kafka {
        // not ready until its partitions are assigned, from the first request on
        shared
            .status
            .register(driftwatch_engine::service::kafka::SOURCE);
        let (config, shared, stop) = (config.clone(), shared.clone(), stop.clone());
        let options = driftwatch_engine::service::kafka::RunOptions {
            exit_at_end: args.exit_at_end,
        };
        let thread = std::thread::Builder::new()
            .name("kafka".into())
            .spawn(move || {
                let outcome =
                    driftwatch_engine::service::kafka::run(&config, &options, &stop, shared);
                // the end of a bounded run, or a failure, ends the service
                stop.cancel();
                outcome
            })
            .context("starting the Kafka thread")?;
        Some(thread)
    } else {
        None
    };
    let dispatcher = shared.dispatcher.clone();
    // the SQL engine owns runtimes of its own, which must not be dropped on
    // the API's runtime: this reference outlives the routes' ones
    let queries = std::sync::Arc::clone(&shared.queries);
    let router = crate::api::router(shared, ingest.clone(), &options, config);
    let served = runtime.block_on(async {
        info!(%address, token = options.token.is_some(), "API listening");
        let on_signal = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = stop_on_signal(on_signal).await {
                warn!(error = %e, "signals cannot be watched; stop with SIGKILL");
            }
        });
        crate::api::serve(listener, router, settings.api.connections, stop.clone()).await;
        anyhow::Ok(())
    });
    // whatever ended the API, the sources stop, checkpoint and report
    stop.cancel();
    let mut summary = RunSummary::default();
    let mut dead_letters = Vec::new();
    let mut failed = served.err();
    if let Some(ingest) = ingest {
        match ingest.finish() {
            Ok(s) => {
                dead_letters.push(s.dead_letter.clone());
                summary.add(&s);
            }
            Err(e) => failed = failed.or(Some(e.into())),
        }
    }
    #[cfg(feature = "kafka")]
    if let Some(thread) = consumer {
        match thread.join() {
            Ok(Ok(s)) => {
                dead_letters.push(s.dead_letter.clone());
                summary.add(&s);
            }
            Ok(Err(e)) => failed = failed.or(Some(e.into())),
            Err(_) => failed = failed.or(Some(anyhow::anyhow!("the Kafka thread panicked"))),
        }
    }
    // every source has checkpointed: what the outboxes hold goes out now,
    // for at most shutdown.drain (the next start delivers the rest)
    if let Some(d) = dispatcher {
        match alerting::finish_delivery(&d, settings.api.shutdown_drain) {
            Ok(delivered) => crate::rules::print_delivered(&delivered),
            Err(e) => failed = failed.or(Some(e.into())),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    summary.dead_letter = dead_letters.join(", ");
    drop(queries);
    crate::output::print_summary(&summary, started.elapsed());
    let path = config.data_dir.run_summary();
    summary.write_json(&path)?;
    println!("summary: {}", path.display());
    Ok(())
}

/// Cancels `stop` at the first SIGTERM or SIGINT.
async fn stop_on_signal(stop: tokio_util::sync::CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = stop.cancelled() => return Ok(()),
    }
    info!("stopping: intake closed, checkpointing");
    stop.cancel();
    Ok(())
}

#[cfg(feature = "kafka")]
fn produce(args: &crate::cli::ProduceArgs, config: &Config) -> Result<()> {
    let mut kafka = config.kafka.clone();
    if let Some(brokers) = &args.brokers {
        kafka.brokers = brokers.clone();
    }
    let started = Instant::now();
    let produced = driftwatch_ingest::kafka::produce_file(&kafka, &args.file, &args.topic, |n| {
        info!(messages = n, "producing");
    })
    .with_context(|| format!("publishing {} to {}", args.file.display(), args.topic))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {} messages to {} in {secs:.2}s ({:.0}/s); {} lines did not decode and were sent without a key",
        produced.messages,
        args.topic,
        produced.messages as f64 / secs.max(1e-9),
        produced.undecodable
    );
    Ok(())
}

fn default_dead_letter(config: &Config, out: Option<&Path>) -> PathBuf {
    match out {
        Some(dir) => dir.join("dead-letter.jsonl"),
        None => config.data_dir.dead_letter(),
    }
}

/// Finishes a bounded run and prints what it did.
fn finish(run: Replay, out: Option<&Path>, started: Instant) -> Result<RunSummary> {
    let finished = run.finish()?;
    if let Some(d) = &finished.delivered {
        crate::rules::print_delivered(d);
    }
    crate::output::print_summary(&finished.summary, started.elapsed());
    if let Some(dir) = out {
        println!("results: {}", dir.display());
    }
    Ok(finished.summary)
}

fn replay(args: ReplayArgs, config: &Config) -> Result<()> {
    let started = Instant::now();
    for file in &args.files {
        if !file.is_file() {
            anyhow::bail!("{}: no such file", file.display());
        }
    }
    let out = args.out.as_deref();
    let dead_letter = args
        .dead_letter
        .clone()
        .unwrap_or_else(|| default_dead_letter(config, out));
    let mut sinks: Vec<Box<dyn WindowSink + Send>> = Vec::new();
    if !args.quiet {
        sinks.push(Box::new(ConsoleSummary {
            verbose: args.features,
            ..ConsoleSummary::default()
        }));
    }
    let rules = match &args.rules {
        Some(dir) => Some(RuleSource::Dir(dir.clone())),
        None => alerting::configured_source(config, None),
    };
    let mut run = Replay::start(
        config,
        ReplayOptions {
            out: args.out.clone(),
            dead_letter,
            sinks,
            rules,
            writer: "replay".into(),
            history: match (args.append, args.replace) {
                (true, _) => HistoryMode::Append,
                (_, true) => HistoryMode::Replace,
                _ => HistoryMode::Refuse,
            },
            on_alert: (!args.quiet).then_some(crate::rules::print_instance as fn(&_)),
        },
    )?;
    // several files are one stream, merged by event time
    let mut sources = Vec::with_capacity(args.files.len());
    for file in &args.files {
        info!(file = %file.display(), "replaying");
        sources.push(open_file(file)?);
    }
    let mut source = match sources.len() {
        1 => sources.pop().unwrap_or_else(|| unreachable!()),
        _ => Box::new(MergedSource::new(sources)),
    };
    let bar = crate::output::progress_bar(source.name());
    run.pipeline()
        .run_source(source.as_mut(), &mut |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    finish(run, out, started)?;
    Ok(())
}

fn demo(args: DemoArgs, config: &Config) -> Result<()> {
    let started = Instant::now();
    let mut settings = config.clone();
    let out = args.out.as_deref();
    // without configured actions, local stand-ins for a retraining system
    // and a chat channel receive the demo's notifications
    let receiver = if settings.action_set.is_empty() {
        let log = out.map_or_else(
            || settings.data_dir.demo_receiver(),
            |d| d.join("receiver.jsonl"),
        );
        let r = crate::demo_receiver::DemoReceiver::start(&log)?;
        settings.action_set = r.actions()?;
        settings.actions = settings.action_set.iter().map(|a| a.name.clone()).collect();
        Some((r, log))
    } else {
        None
    };
    // a demo starts over: the last demo's outbox would take its
    // notifications for repeats and not send them
    let outbox = settings.data_dir.outbox("demo");
    if outbox.exists() {
        std::fs::remove_file(&outbox).with_context(|| format!("removing {}", outbox.display()))?;
    }
    let settings = &settings;
    let config = SynthConfig::for_events(args.events, args.seed);
    let mut synth = Synth::new(config.clone());
    println!(
        "driftwatch demo: {} synthetic events from models {}; drift starts at {}",
        args.events,
        synth
            .model_ids()
            .iter()
            .map(|m| m.as_ref())
            .collect::<Vec<_>>()
            .join(", "),
        synth
            .drift_start()
            .map(format_time)
            .unwrap_or_else(|| "never".into()),
    );
    println!(
        "windows: {} ms, allowed lateness {} ms; labels arrive minutes to days after their predictions",
        settings.window.size(),
        settings.allowed_lateness_ms
    );
    if let Some((_, log)) = &receiver {
        println!(
            "actions: critical alerts start a retraining run, every alert goes to a chat; a local receiver stands in for both (requests kept in {})",
            log.display()
        );
        println!(
            "the model service: a retraining run takes {} h of event time, then the next version of the model serves",
            TRAINING_MS / 3_600_000
        );
    }
    training_references(settings, &config, &synth)?;
    println!();
    let rules = match &args.rules {
        Some(dir) => Some(RuleSource::Dir(dir.clone())),
        None => alerting::configured_source(settings, Some(crate::rules::BUNDLED_RULES)),
    };
    let mut run = Replay::start(
        settings,
        ReplayOptions {
            out: args.out.clone(),
            dead_letter: default_dead_letter(settings, out),
            sinks: if args.quiet {
                Vec::new()
            } else {
                vec![Box::new(ConsoleSummary {
                    verbose: args.features,
                    ..ConsoleSummary::default()
                })]
            },
            rules,
            writer: "demo".into(),
            // the demo is a run of its own each time
            history: HistoryMode::Replace,
            on_alert: Some(crate::rules::print_instance),
        },
    )?;
    let mut service = ModelService::default();
    let mut buf = Vec::with_capacity(2048);
    let mut next_hour = synth.clock() - synth.clock().rem_euclid(HOUR_MS) + HOUR_MS;
    for seq in 0..args.events {
        if let Some((r, _)) = &receiver
            && synth.clock() >= next_hour
        {
            // the simulated model service looks at the retraining system
            // once an hour of event time: what the rules found so far has
            // been delivered by then
            run.catch_up(alerting::DRAIN_LIMIT)?;
            service.hour(next_hour, r, &mut synth)?;
            next_hour += HOUR_MS;
        }
        let Some(event) = synth.next() else { break };
        buf.clear();
        encode_json(&event, &mut buf);
        run.pipeline().handle_bytes(seq, &buf)?;
    }
    finish(run, out, started)?;
    if let Some((r, _)) = receiver {
        println!("the local receiver got {} request(s)", r.stop());
    }
    // the loop and the reports are read from the history
    if settings.sql.history {
        let engine = alerting::sql_engine(settings, true)?;
        crate::output::print_retraining_loops(&engine)?;
        println!();
        for model in synth.model_ids().iter().map(|m| m.as_ref()) {
            let path = match out {
                Some(dir) => driftwatch_engine::DataDir::new(dir).report(model),
                None => settings.data_dir.report(model),
            };
            match write_report(&engine, settings, model, Default::default(), &path) {
                Ok(path) => println!("report of {model}: {}", path.display()),
                // a short demo may close no window of a model
                Err(e)
                    if e.downcast_ref::<driftwatch_engine::Error>()
                        .is_some_and(|e| matches!(e, driftwatch_engine::Error::Input(_))) =>
                {
                    println!("no report of {model}: {e}")
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

const HOUR_MS: i64 = 3_600_000;

/// The hours of labelled traffic before the demo's stream that its models
/// were trained on.
const TRAINING_HOURS: i64 = 12;

/// The demo's training set: the same models, undrifted, every prediction
/// labelled, in the hours before the stream; each model version that
/// serves at the start gets its reference from it (so its windows carry
/// estimated performance and multivariate drift before the labels arrive).
fn training_references(settings: &Config, stream: &SynthConfig, synth: &Synth) -> Result<()> {
    let training = SynthConfig {
        seed: stream.seed ^ 0x7ea1_7ea1,
        start: stream.start - TRAINING_HOURS * HOUR_MS,
        label_fraction: 1.0,
        drift_after_ms: None,
        late_fraction: 0.0,
        ..stream.clone()
    };
    // one file per model, so that each reference build reads only its own
    let mut files = std::collections::BTreeMap::new();
    for model in synth.model_ids() {
        let path = settings.data_dir.demo_training(&model);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        files.insert(model, (path, BufWriter::new(file)));
    }
    let mut buf = Vec::with_capacity(2048);
    // the predictions before the stream starts, and the labels of those
    // that come in as many hours again (most do; the rest stay unlabelled,
    // as in a real training set's last days)
    let mut unlabelled = std::collections::HashSet::new();
    for event in Synth::new(training) {
        let keep = match &event {
            Event::Prediction(p) if p.timestamp < stream.start => {
                unlabelled.insert(p.event_id.clone())
            }
            Event::Prediction(_) => false,
            Event::Label(l) => unlabelled.remove(&l.event_id),
        };
        if keep && let Some((path, w)) = files.get_mut(event.model_id()) {
            buf.clear();
            encode_json(&event, &mut buf);
            buf.push(b'\n');
            w.write_all(&buf)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if event.timestamp() >= stream.start + TRAINING_HOURS * HOUR_MS {
            break;
        }
    }
    for (model, (path, mut w)) in files {
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        drop(w);
        let version = synth.version(&model, stream.start);
        let built = driftwatch_engine::reference::build(
            &settings.data_dir,
            &driftwatch_engine::reference::BuildRequest {
                files: &[path],
                version: version.as_deref(),
                ..driftwatch_engine::reference::BuildRequest::new(settings, &model)
            },
        )?;
        println!(
            "reference of {model} {}: {} training predictions, {}",
            version.as_deref().unwrap_or("-"),
            built.used,
            match &built.label_free {
                Some(l) => crate::reference::label_free_words(l),
                None => "no label-free figures".to_owned(),
            }
        );
    }
    Ok(())
}

/// How long the demo's retraining runs take (event time).
const TRAINING_MS: i64 = 2 * HOUR_MS;

/// The demo's model service: deploys the next version of a model
/// [`TRAINING_MS`] after an alert started its retraining run.
#[derive(Debug, Default)]
struct ModelService {
    /// Deployments not yet announced: (from, model, version, run).
    coming: Vec<(i64, String, String, String)>,
}

impl ModelService {
    /// An hour of event time ended at `now`: runs started are scheduled,
    /// deployments that began are announced.
    fn hour(
        &mut self,
        now: i64,
        receiver: &crate::demo_receiver::DemoReceiver,
        synth: &mut Synth,
    ) -> Result<()> {
        for run in receiver.take_started() {
            let serving = synth.version(&run.model_id, now);
            let scheduled = synth.version(&run.model_id, i64::MAX);
            // a request about a version no longer serving, or a model
            // already being retrained, starts nothing new
            if serving.as_deref() != run.model_version.as_deref() || scheduled != serving {
                continue;
            }
            let next = run.next_version;
            let from = now + TRAINING_MS;
            synth
                .deploy(&run.model_id, &next, from)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "  .. retraining run {} for {} (alert {}): {next} will serve from {}",
                run.job,
                run.model_id,
                run.rule,
                format_time(from)
            );
            self.coming.push((from, run.model_id, next, run.job));
        }
        let (begun, coming): (Vec<_>, Vec<_>) = self.coming.drain(..).partition(|c| c.0 <= now);
        self.coming = coming;
        for (from, model, version, job) in begun {
            println!(
                "  .. the model service serves {model} {version} (trained by {job}) since {}",
                format_time(from)
            );
        }
        Ok(())
    }
}

fn gen_file(args: GenArgs) -> Result<()> {
    let started = Instant::now();
    let mut config = match (args.events, args.predictions) {
        (_, Some(p)) => SynthConfig::for_predictions(p, args.seed),
        (Some(e), None) => SynthConfig::for_events(e, args.seed),
        (None, None) => anyhow::bail!("give --events or --predictions"),
    };
    if !(args.interval_ms.is_finite() && args.interval_ms > 0.0) {
        anyhow::bail!("--interval-ms must be above 0, got {}", args.interval_ms);
    }
    // the drift starts as far through the stream as before
    config.drift_after_ms = config
        .drift_after_ms
        .map(|d| (d as f64 * args.interval_ms / config.mean_interval_ms) as i64);
    config.mean_interval_ms = args.interval_ms;
    config.model = args.model.clone();
    config.numeric_features = args.numeric_features;
    config.categorical_features = args.categorical_features;
    if args.no_drift {
        config.drift_after_ms = None;
    }
    if let Some(t) = args.drift_at {
        config.drift_after_ms = Some(t - config.start);
    }
    if !(0.0..=1.0).contains(&args.late_fraction) {
        anyhow::bail!(
            "--late-fraction must be between 0 and 1, got {}",
            args.late_fraction
        );
    }
    config.late_fraction = args.late_fraction;
    let mut synth = Synth::try_new(config).map_err(|e| anyhow::anyhow!("--model: {e}"))?;
    for (model, version, from) in &args.deploy {
        synth
            .deploy(model, version, *from)
            .map_err(|e| anyhow::anyhow!("--deploy: {e}"))?;
    }
    let columns = synth.feature_columns();
    let limit_events = args.events.unwrap_or(u64::MAX);
    let limit_predictions = args.predictions.unwrap_or(u64::MAX);
    let written = std::cell::Cell::new(0u64);
    let predictions = std::cell::Cell::new(0u64);
    let events = synth
        .take_while(|e| {
            if matches!(e, driftwatch_ingest::event::Event::Prediction(_)) {
                predictions.set(predictions.get() + 1);
            }
            written.get() < limit_events && predictions.get() <= limit_predictions
        })
        .inspect(|_| written.set(written.get() + 1));
    let name = args.out.to_string_lossy().to_string();
    if name.ends_with(".parquet") {
        let mut writer = EventParquetWriter::create(&args.out, columns, vec![Arc::from("region")])?;
        for event in events {
            writer.write(event)?;
        }
        writer.finish()?;
    } else {
        let file =
            File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let file = BufWriter::with_capacity(1 << 20, file);
        let write_all = |out: &mut dyn Write| -> Result<()> {
            let mut buf = Vec::with_capacity(2048);
            for event in events {
                buf.clear();
                encode_json(&event, &mut buf);
                buf.push(b'\n');
                out.write_all(&buf)?;
            }
            Ok(())
        };
        if name.ends_with(".gz") {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            write_all(&mut gz)?;
            gz.finish()?.flush()?;
        } else {
            let mut file = file;
            write_all(&mut file)?;
            file.flush()?;
        }
    }
    info!(file = %args.out.display(), events = written.get(), predictions = predictions.get().min(limit_predictions), seconds = format!("{:.2}", started.elapsed().as_secs_f64()), "generated");
    Ok(())
}
