//! Logging with `tracing`: human-readable text by default, JSON lines on
//! request, always on stderr so stdout stays clean for results.
//!
//! Text logs are one line per event whatever a value holds: control
//! characters in messages and fields (a receiver's answer, a value from an
//! event) are escaped, so nothing can forge a line or drive the terminal.
//! Colours only when stderr is a terminal and `NO_COLOR` is not set.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

use crate::output::printable;
use crate::settings::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // a second init (tests) keeps the first subscriber
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, level, colour, std::io::stderr));
}

fn subscriber<W>(
    format: LogFormat,
    level: &str,
    colour: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.fmt_fields(escaped_fields()).finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// Fields as the default text format writes them (the message, then
/// `name=value`), each value shown with [`printable`].
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let mut text = String::new();
            write!(text, "{value:?}")?;
            match field.name() {
                "message" => write!(w, "{}", printable(&text)),
                name => write!(w, "{name}={}", printable(&text)),
            }
        },
    )
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_hostile_value_stays_on_its_log_line_without_escape_sequences() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let s = subscriber(LogFormat::Text, "info", false, move || out.clone());
        let hostile = "m\u{1b}]0;owned\u{7}\n2026-01-01T00:00:00Z ERROR forged";
        tracing::subscriber::with_default(s, || {
            tracing::warn!(model = %hostile, "delivery failed: {hostile}");
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.contains(r"delivery failed: m\u{1b}]0;owned\u{7}\n2026-01-01T00:00:00Z ERROR forged model=m\u{1b}"),
            "{text}"
        );
    }
}
