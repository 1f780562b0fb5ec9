//! `GET /metrics`: the service's figures in the Prometheus (OpenMetrics)
//! text format, encoded by `prometheus-client`. Each scrape reads the
//! sources' status, the models' latest figures and the current alerts, so
//! what is served is never older than the sources' last report.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use driftwatch_engine::service::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Api, error};

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type SecondsCounters = Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>;
type Gauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn serve(State(api): State<Arc<Api>>) -> Response {
    let shared = api.shared.clone();
    let read = tokio::task::spawn_blocking(move || {
        let models = driftwatch_engine::figures::model_figures(&shared.queries);
        let alerts = driftwatch_engine::alerting::alerts(&shared.queries, 0);
        let outbox = shared.dispatcher.as_ref().and_then(|d| d.pending().ok());
        render(
            &shared.status,
            models.ok().as_ref(),
            alerts.ok().as_ref(),
            outbox,
        )
    })
    .await;
    match read {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The exposition of what `status`, the models' figures and the alerts say
/// (`None`: they could not be read; `driftwatch_figures_up` says so).
fn render(
    status: &Status,
    models: Option<&std::collections::BTreeMap<String, driftwatch_engine::figures::ModelFigures>>,
    alerts: Option<&driftwatch_engine::alerting::AlertsView>,
    outbox: Option<u64>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("driftwatch");
    let mut counter = |name: &str, help: &str| {
        let family = Counters::default();
        registry.register(name, help, family.clone());
        family
    };
    let events = counter(
        "events",
        "Records applied by each source, by outcome (accepted or rejected)",
    );
    let rejected = counter("events_rejected", "Records refused, by source and reason");
    let deliveries = counter("deliveries", "Notification delivery attempts, by outcome");
    let evaluations = counter(
        "rule_evaluations",
        "Windows evaluated against the rules, by source",
    );
    let rule_errors = counter("rule_errors", "Rule evaluations that failed, by source");
    let model_windows = counter("model_windows", "Windows closed, per model");
    let model_predictions = counter(
        "model_predictions",
        "Predictions in closed windows, per model",
    );
    let rule_seconds = SecondsCounters::default();
    registry.register(
        "rule_evaluation_seconds",
        "Seconds spent evaluating rules, by source",
        rule_seconds.clone(),
    );
    let mut gauge = |name: &str, help: &str| {
        let family = Gauges::default();
        registry.register(name, help, family.clone());
        family
    };
    let ready = gauge(
        "source_ready",
        "1 when the source has restored its state and takes events",
    );
    let lag = gauge(
        "consumer_lag",
        "Kafka records not yet applied, per topic and partition",
    );
    let checkpoint_age = gauge(
        "checkpoint_age_seconds",
        "Seconds since the source's last checkpoint",
    );
    let unreachable = gauge(
        "broker_unreachable_seconds",
        "Seconds the Kafka broker has not answered (0 while it does)",
    );
    let alerts_by_state = gauge(
        "alerts",
        "Alert instances pending or firing now, by state and severity",
    );
    let accuracy = gauge(
        "model_accuracy",
        "Accuracy of the model's latest window with labels",
    );
    let estimated = gauge(
        "model_estimated_accuracy",
        "Accuracy estimated before the labels in the model's latest window with an estimate",
    );
    let coverage = gauge(
        "model_label_coverage",
        "Share of that window's predictions with a label",
    );
    let drifted = gauge(
        "model_features_drifted",
        "Features drifted in the model's latest window with drift figures",
    );
    let drift_share = gauge(
        "model_drift_share",
        "Share of the compared features that drifted in that window",
    );
    let close_delay = gauge(
        "window_close_delay_seconds",
        "Wall-clock time at the latest window close minus that window's end, by source",
    );
    let outbox_pending = gauge(
        "outbox_pending",
        "Notifications waiting in the outboxes to be delivered",
    );
    let figures_up = gauge(
        "figures_up",
        "1 when the models' figures and the alerts could be read for this scrape",
    );

    let mut deliveries_seen = false;
    for (source, s) in status.sources() {
        let m = &s.metrics;
        let l = |extra: &[(&'static str, &str)]| {
            let mut all = labels(&[("source", source)]);
            all.extend(labels(extra));
            all
        };
        ready
            .get_or_create(&l(&[]))
            .set(f64::from(u8::from(s.ready)));
        events
            .get_or_create(&l(&[("outcome", "accepted")]))
            .inc_by(m.accepted);
        events
            .get_or_create(&l(&[("outcome", "rejected")]))
            .inc_by(m.rejected);
        for (reason, n) in &m.rejected_by_reason {
            rejected.get_or_create(&l(&[("reason", reason)])).inc_by(*n);
        }
        checkpoint_age
            .get_or_create(&l(&[]))
            .set(m.checkpoint_age_seconds);
        if let Some(d) = m.window_close_delay_seconds {
            close_delay.get_or_create(&l(&[])).set(d);
        }
        evaluations
            .get_or_create(&l(&[]))
            .inc_by(m.rule_evaluations);
        rule_errors.get_or_create(&l(&[])).inc_by(m.rule_errors);
        rule_seconds.get_or_create(&l(&[])).inc_by(m.rule_seconds);
        for (tp, n) in &m.lag {
            let (topic, partition) = tp.rsplit_once('/').unwrap_or((tp, ""));
            lag.get_or_create(&labels(&[("topic", topic), ("partition", partition)]))
                .set(*n as f64);
        }
        if source == "kafka" {
            unreachable
                .get_or_create(&Vec::new())
                .set(m.broker_unreachable_seconds.unwrap_or(0.0));
        }
        // one delivery worker serves every source
        if let (Some(d), false) = (&m.deliveries, deliveries_seen) {
            deliveries_seen = true;
            for (outcome, n) in [
                ("delivered", d.delivered),
                ("retried", d.retried),
                ("failed", d.failed),
            ] {
                deliveries
                    .get_or_create(&labels(&[("outcome", outcome)]))
                    .inc_by(n);
            }
        }
    }
    if let Some(models) = models {
        for (model, f) in models {
            let l = labels(&[("model_id", model)]);
            model_windows.get_or_create(&l).inc_by(f.windows);
            model_predictions.get_or_create(&l).inc_by(f.predictions);
            if let Some(a) = f.accuracy {
                accuracy.get_or_create(&l).set(a);
            }
            if let Some(c) = f.label_coverage {
                coverage.get_or_create(&l).set(c);
            }
            if let Some(e) = f.estimated_accuracy {
                estimated.get_or_create(&l).set(e);
            }
            if let (Some(n), Some(of)) = (f.features_drifted, f.features_compared) {
                drifted.get_or_create(&l).set(n as f64);
                if of > 0 {
                    drift_share.get_or_create(&l).set(n as f64 / of as f64);
                }
            }
        }
    }
    if let Some(alerts) = alerts {
        // the usual severities are always there, at 0 without alerts, so
        // that a dashboard reads 0 rather than no data
        for state in ["pending", "firing"] {
            for severity in ["critical", "warning", "info"] {
                alerts_by_state
                    .get_or_create(&labels(&[("state", state), ("severity", severity)]))
                    .set(0.0);
            }
        }
        for (state, severity) in current_alerts(alerts) {
            alerts_by_state
                .get_or_create(&labels(&[("state", &state), ("severity", &severity)]))
                .inc();
        }
    }
    if let Some(n) = outbox {
        outbox_pending.get_or_create(&Vec::new()).set(n as f64);
    }
    figures_up
        .get_or_create(&Vec::new())
        .set(f64::from(u8::from(models.is_some() && alerts.is_some())));
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// (state, severity) of each alert instance pending or firing now.
fn current_alerts(view: &driftwatch_engine::alerting::AlertsView) -> Vec<(String, String)> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for batch in &view.current {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok())
        };
        let (Some(state), Some(severity)) = (column("state"), column("severity")) else {
            continue;
        };
        let (state, severity) = (state.as_string::<i32>(), severity.as_string::<i32>());
        for i in 0..batch.num_rows() {
            let text = |a: &arrow::array::StringArray| {
                if a.is_null(i) {
                    String::new()
                } else {
                    a.value(i).to_owned()
                }
            };
            out.push((text(state), text(severity)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_engine::service::{IngestMetrics, SourceStatus};

    #[test]
    fn the_exposition_holds_each_source_and_model() {
        let status = Status::default();
        status.set(
            "http",
            SourceStatus {
                ready: true,
                metrics: IngestMetrics {
                    consumed: 12,
                    accepted: 10,
                    rejected: 2,
                    rejected_by_reason: [("late_event".to_owned(), 2)].into(),
                    checkpoint_age_seconds: 1.5,
                    ..IngestMetrics::default()
                },
            },
        );
        let models = [(
            "churn".to_owned(),
            driftwatch_engine::figures::ModelFigures {
                windows: 3,
                predictions: 10,
                features_compared: Some(4),
                features_drifted: Some(1),
                accuracy: Some(0.75),
                label_coverage: Some(0.5),
                estimated_accuracy: Some(0.625),
                ..Default::default()
            },
        )]
        .into();
        let text = render(&status, Some(&models), None, Some(2)).expect("encodes");
        for line in [
            "driftwatch_events_total{source=\"http\",outcome=\"accepted\"} 10",
            "driftwatch_events_total{source=\"http\",outcome=\"rejected\"} 2",
            "driftwatch_events_rejected_total{source=\"http\",reason=\"late_event\"} 2",
            "driftwatch_source_ready{source=\"http\"} 1.0",
            "driftwatch_checkpoint_age_seconds{source=\"http\"} 1.5",
            "driftwatch_model_windows_total{model_id=\"churn\"} 3",
            "driftwatch_model_accuracy{model_id=\"churn\"} 0.75",
            "driftwatch_model_estimated_accuracy{model_id=\"churn\"} 0.625",
            "driftwatch_model_drift_share{model_id=\"churn\"} 0.25",
            "driftwatch_figures_up 0.0",
            "driftwatch_outbox_pending 2.0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // the alert series exist at 0 once the alerts could be read
        assert!(!text.contains("driftwatch_alerts{"));
        let none = driftwatch_engine::alerting::AlertsView {
            current: Vec::new(),
            recent: Vec::new(),
        };
        let text = render(&status, Some(&models), Some(&none), None).expect("encodes");
        for line in [
            "driftwatch_alerts{state=\"firing\",severity=\"critical\"} 0.0",
            "driftwatch_alerts{state=\"pending\",severity=\"warning\"} 0.0",
            "driftwatch_figures_up 1.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
