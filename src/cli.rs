//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::LogFormat;

/// driftwatch: watches machine-learning models in production.
#[derive(Debug, Parser)]
#[command(name = "driftwatch", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML); `DRIFTWATCH__SECTION__KEY` variables override it.
    #[arg(long, short, global = true, env = "DRIFTWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs recorded events (JSONL, JSONL.gz or Parquet) through the pipeline.
    Replay(ReplayArgs),
    /// Generates a synthetic stream with drift and runs it through the pipeline.
    Demo(DemoArgs),
    /// Writes a synthetic event file (JSONL, `.gz` for gzip, `.parquet` for Parquet).
    Gen(GenArgs),
    /// Runs the service: the HTTP API on api.listen (default
    /// 127.0.0.1:9797), taking events by `POST /v1/events` unless `[kafka]`
    /// is configured, and then the Kafka topics; checkpoints its state in the
    /// data directory, writes each closed window there.
    Run(RunArgs),
    /// Publishes an event file to a Kafka topic, keyed by model_id.
    #[cfg(feature = "kafka")]
    Produce(ProduceArgs),
    /// Reference profiles the drift detector compares windows with.
    #[command(subcommand)]
    Reference(ReferenceCommand),
    /// Alert rules: check them, run their examples.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Runs one SQL query over the history in the data directory.
    Sql(SqlArgs),
    /// Writes a model's report: one self-contained HTML page with its
    /// accuracy, drift, distributions, data quality and retraining loop
    /// over time, from the history in the data directory.
    Report(ReportArgs),
    /// Alerts pending or firing now, and the latest alert events
    /// (transitions and deliveries), from the history's `alerts` table.
    Alerts(AlertsArgs),
    /// Silences: while one is active, notifications leave out the alerts it matches.
    #[command(subcommand)]
    Silence(SilenceCommand),
}

/// `driftwatch alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// How many of the latest alert events to show.
    #[arg(long, default_value_t = 20)]
    pub recent: usize,
}

/// `driftwatch silence`.
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Adds a silence; prints its id.
    Add {
        /// Label matchers, all of which must hold: `model_id=churn`,
        /// `rule=~feature_.*`, `severity!=critical`, `feature!~age|plan`.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long it lasts ("2h", "1d 6h").
        #[arg(long, default_value = "2h")]
        duration: String,
        /// When it starts (RFC 3339) [default: now].
        #[arg(long)]
        start: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who [default: $USER].
        #[arg(long)]
        author: Option<String>,
    },
    /// Lists silences that are active or yet to start (`--all`: ended ones too).
    List {
        /// Also those that ended.
        #[arg(long)]
        all: bool,
    },
    /// Ends a silence now.
    Expire {
        /// Its id (or the start of it).
        id: String,
    },
}

/// `driftwatch rules`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Parses and plans every rule against the table schemas without running
    /// it; prints each error with its file and rule; exits non-zero on any.
    Check {
        /// Rule directory or file [default: sql.rules_dir].
        dir: Option<PathBuf>,
    },
    /// Runs the examples (`[[test]]`) of the rule files: table rows in,
    /// expected alert rows out.
    Test {
        /// Rule directory or file [default: sql.rules_dir].
        dir: Option<PathBuf>,
    },
}

/// How `driftwatch sql` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqlFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
}

/// `driftwatch sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// One SELECT statement. Tables: window_summary, model_metrics,
    /// model_metrics_latest, estimated_metrics, feature_drift,
    /// feature_sketches, feature_summary, drift_summary, multivariate_drift,
    /// data_quality, change_points, label_stats, events, alerts,
    /// rule_errors, model_versions, model_version_log (docs/sql.md).
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub format: SqlFormat,
}

/// `driftwatch report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// Windows ending after this (RFC 3339) [default: the first].
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<i64>,
    /// Windows starting before this (RFC 3339) [default: the last].
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<i64>,
    /// The page to write.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

/// `driftwatch reference`.
#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Builds a model (version)'s reference from event files, e.g. the
    /// training set or a recorded production period, and stores it in the data directory.
    Build {
        /// Event files (JSONL, JSONL.gz, Parquet); only the model's predictions are used.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Model id.
        #[arg(long)]
        model: String,
        /// Model version; without it the profile serves every version that has none of its own.
        #[arg(long)]
        version: Option<String>,
        /// Only predictions at or after this event time (RFC 3339): a chosen production window.
        #[arg(long)]
        from: Option<String>,
        /// Only predictions before this event time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only the first N matching predictions (e.g. the first N after a deploy).
        #[arg(long)]
        first: Option<u64>,
        /// The files are plain feature tables (JSONL objects of feature values,
        /// or Parquet columns of features), e.g. a training set.
        #[arg(long, conflicts_with_all = ["from", "until"])]
        table: bool,
    },
    /// Lists the stored reference profiles.
    List,
    /// Shows one profile feature by feature.
    Show {
        /// Model id.
        #[arg(long)]
        model: String,
        /// Model version.
        #[arg(long)]
        version: Option<String>,
    },
}

/// `driftwatch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Stop once every assigned partition is read to its end (closing all
    /// windows): a backfill from Kafka.
    #[arg(long)]
    pub exit_at_end: bool,
}

/// `driftwatch produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Event file: JSON Lines (plain or gzip; lines sent as they are) or Parquet.
    pub file: PathBuf,
    /// Topic to publish to.
    #[arg(long)]
    pub topic: String,
    /// Brokers (overrides `kafka.brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
}

/// `driftwatch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Event files; predictions and labels may be mixed or in separate
    /// files. Several files are read as one stream, merged by event time.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write window results (JSONL and Parquet per table) and the run summary here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Dead-letter file [default: OUT/dead-letter.jsonl, or DATA_DIR/dead-letter.jsonl].
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Do not print a line per closed window.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print each window's feature summary too.
    #[arg(long)]
    pub features: bool,
    /// Alert rules (directory or file) [default: sql.rules_dir when it exists].
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Add this replay's rows to the history earlier replays left in the
    /// data directory (without it, or --replace, a replay into a history
    /// is refused).
    #[arg(long, conflicts_with = "replace")]
    pub append: bool,
    /// Remove the history earlier replays left, then replay.
    #[arg(long)]
    pub replace: bool,
}

/// `driftwatch demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of events (predictions and labels).
    #[arg(long, default_value_t = 120_000)]
    pub events: u64,
    /// Seed of the synthetic stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write window results and the run summary here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print each window's feature summary too.
    #[arg(long)]
    pub features: bool,
    /// Do not print a line per closed window.
    #[arg(long, short)]
    pub quiet: bool,
    /// Alert rules (directory or file) [default: sql.rules_dir when it
    /// exists, else the bundled rules].
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// `driftwatch gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of events (predictions and labels) to write.
    #[arg(
        long,
        required_unless_present = "predictions",
        conflicts_with = "predictions"
    )]
    pub events: Option<u64>,
    /// Write events until this many predictions are written (with the
    /// labels that arrived meanwhile), instead of `--events`.
    #[arg(long)]
    pub predictions: Option<u64>,
    /// Only this model's traffic: churn (binary), fraud (binary) or eta
    /// (regression).
    #[arg(long)]
    pub model: Option<String>,
    /// At most this many numeric features per model (of 22).
    #[arg(long)]
    pub numeric_features: Option<usize>,
    /// At most this many categorical features per model (of 6).
    #[arg(long)]
    pub categorical_features: Option<usize>,
    /// Output file; `.gz` gives gzip JSONL, `.parquet` Parquet, anything else JSONL.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the synthetic stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Generate a stream without drift.
    #[arg(long)]
    pub no_drift: bool,
    /// When drift starts (RFC 3339; default: half-way through the stream).
    #[arg(long, value_parser = parse_instant, conflicts_with = "no_drift")]
    pub drift_at: Option<i64>,
    /// Share of predictions that arrive two hours late.
    #[arg(long, default_value_t = 0.0005)]
    pub late_fraction: f64,
    /// Mean time between two predictions (ms, all models together): the
    /// stream's span is about this times the predictions.
    #[arg(long, default_value_t = 1000.0)]
    pub interval_ms: f64,
    /// Deploy a retrained version: `MODEL=VERSION@TIME` (RFC 3339), e.g.
    /// `churn=v13@2026-11-01T08:00:00Z`: predictions from then on carry
    /// the version, and drift no longer costs it accuracy. Repeatable.
    #[arg(long, value_parser = parse_deploy)]
    pub deploy: Vec<(String, String, i64)>,
}

/// An RFC 3339 time, as ms since the epoch.
fn parse_instant(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?}: {e}; expected RFC 3339, e.g. 2026-11-01T08:00:00Z"))
}

/// `MODEL=VERSION@TIME`.
fn parse_deploy(text: &str) -> Result<(String, String, i64), String> {
    let bad =
        || format!("{text:?}: expected MODEL=VERSION@TIME, e.g. churn=v13@2026-11-01T08:00:00Z");
    let (model, rest) = text.split_once('=').ok_or_else(bad)?;
    let (version, time) = rest.split_once('@').ok_or_else(bad)?;
    if model.is_empty() || version.is_empty() {
        return Err(bad());
    }
    Ok((model.to_owned(), version.to_owned(), parse_instant(time)?))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Regression (issue 41, item 15): `sql --help` left out six tables.
    #[test]
    fn sql_help_names_every_table() {
        let cli = Cli::command();
        let sql = cli.find_subcommand("sql").expect("sql");
        let help = sql
            .get_arguments()
            .find(|a| a.get_id() == "query")
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .expect("help of the query");
        let tables =
            driftwatch_sql::Tables::new(driftwatch_sql::standard_tables().expect("tables"), None)
                .expect("tables");
        let engine =
            driftwatch_sql::Engine::new(tables, driftwatch_sql::Limits::default()).expect("engine");
        let missing: Vec<String> = engine
            .table_names()
            .into_iter()
            .filter(|t| {
                !help
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == t)
            })
            .collect();
        assert!(missing.is_empty(), "{missing:?} not in: {help}");
    }
}
