//! What templates see, and the default templates.
//!
//! Every template (a webhook `body`, preset `inputs`, an email's `subject`,
//! `text` and `html`, a chat `text`) renders over the same context:
//!
//! | name | what |
//! | --- | --- |
//! | `key` | the idempotency key |
//! | `action` | the action's name |
//! | `status` | `firing` or `resolved` |
//! | `group` | the group's labels |
//! | `common_labels` | labels all alerts share |
//! | `alerts` | each alert: `rule`, `severity`, `status`, `model_id`, `model_version`, `window_start`, `window_end`, `value`, `labels`, `annotations`, `starts_at`, `fired_at`, `ends_at`, `fingerprint`, `evidence` |
//! | `firing`, `resolved` | how many alerts of each |
//! | `repeat` | whether it repeats an earlier notification |
//! | `time` | when it was made (event time) |
//!
//! Times are RFC 3339 text. An alert's `evidence` (null until it fired) is
//! what the window that made it fire showed: `window`, `metrics` (the
//! latest revision's overall values with `predictions`, `labeled`,
//! `label_coverage`), `drift` (features compared, warning, drifted),
//! `drifted_features` (the most drifted, with their statistics) and
//! `links` (API addresses, when `api.public_url` is known).

use serde_json::{Value, json};

use crate::alert::{AlertView, Status};
use crate::config::Action;
use crate::error::{Error, Result};
use crate::group::Notification;
use crate::key::rfc3339;

/// Default email subject.
pub const DEFAULT_SUBJECT: &str = "[driftwatch] {{ status | upper }}{% if firing %} ({{ firing }}){% endif %} {{ common_labels.rule or (alerts | length ~ ' alerts') }} {{ common_labels.model_id }}";

/// Default plain text (email body, chat message).
pub const DEFAULT_TEXT: &str = "{{ status | upper }}: {{ firing }} firing, {{ resolved }} resolved{% if repeat %} (reminder){% endif %}
{% for a in alerts %}
[{{ a.status | upper }}] {{ a.rule }} ({{ a.severity }}) model {{ a.model_id }}{% if a.model_version %} {{ a.model_version }}{% endif %}, window {{ a.window_start }} .. {{ a.window_end }}{% if a.value is not none %}, value {{ a.value }}{% endif %}
{% if a.annotations.summary %}  {{ a.annotations.summary }}
{% endif %}{% endfor %}";

/// Default HTML body (email).
pub const DEFAULT_HTML: &str = "<p><b>{{ status | upper }}</b>: {{ firing }} firing, {{ resolved }} resolved{% if repeat %} (reminder){% endif %}</p>
<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">
<tr><th>status</th><th>rule</th><th>severity</th><th>model</th><th>window end</th><th>value</th><th>summary</th></tr>
{% for a in alerts %}<tr><td>{{ a.status }}</td><td>{{ a.rule }}</td><td>{{ a.severity }}</td><td>{{ a.model_id }} {{ a.model_version or '' }}</td><td>{{ a.window_end }}</td><td>{{ a.value if a.value is not none else '' }}</td><td>{{ a.annotations.summary or '' }}</td></tr>
{% endfor %}</table>";

/// How interpolated values are escaped in an action's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escaping {
    /// The webhook `body` is JSON: every value is escaped as the inside of a
    /// JSON string, so a hostile id cannot close the string and add keys
    /// (`tojson` writes a whole JSON value).
    pub json_body: bool,
    /// The `text` goes to a chat: `&`, `<`, `>` become entities and mentions
    /// (`@here`, `@channel`, …) are broken with a word joiner.
    pub chat_text: bool,
}

const JSON_STRING: &str = "json-string";
const CHAT: &str = "chat";

/// An empty template environment escaping as `escaping` says; the email
/// `html` is always HTML-escaped.
pub(crate) fn environment(escaping: Escaping) -> minijinja::Environment<'static> {
    use minijinja::AutoEscape;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(move |name| match name {
        "html" => AutoEscape::Html,
        "body" if escaping.json_body => AutoEscape::Custom(JSON_STRING),
        "text" if escaping.chat_text => AutoEscape::Custom(CHAT),
        _ => AutoEscape::None,
    });
    env.set_formatter(|out, state, value| {
        let escape: fn(&str) -> String = match state.auto_escape() {
            AutoEscape::Custom(JSON_STRING) => json_string_inside,
            AutoEscape::Custom(CHAT) => chat_escaped,
            _ => return minijinja::escape_formatter(out, state, value),
        };
        let text = if value.is_safe() || value.is_undefined() {
            value.to_string()
        } else {
            escape(&value.to_string())
        };
        std::fmt::Write::write_str(out, &text).map_err(minijinja::Error::from)
    });
    env
}

/// `text` escaped to sit between the quotes of a JSON string.
fn json_string_inside(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

/// `text` as chat message text: Slack's three entities, and `@word` broken
/// with U+2060 so that Mattermost and Rocket.Chat do not notify anyone.
fn chat_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' if chars.peek().is_some_and(|n| n.is_alphanumeric()) => out.push_str("@\u{2060}"),
            c => out.push(c),
        }
    }
    out
}

/// Variables every template can read (the context's top-level names).
const CONTEXT: [&str; 10] = [
    "key",
    "action",
    "status",
    "group",
    "common_labels",
    "alerts",
    "firing",
    "resolved",
    "repeat",
    "time",
];

/// Checks every template of `action`: variables it reads exist, and it
/// renders for a firing and for a resolved sample notification. The error
/// names the template (`body`, `input.model_id`, …) and what is wrong.
pub(crate) fn check(action: &Action) -> std::result::Result<(), (String, String)> {
    let known = CONTEXT.iter().map(|c| (*c).to_owned()).collect();
    let samples: Vec<Value> = [Status::Firing, Status::Resolved]
        .into_iter()
        .map(|status| context(&sample(&action.name, status)))
        .collect();
    // names first: the iterator holds the environment's lock, which
    // get_template takes again
    let names: Vec<String> = action
        .templates
        .templates()
        .map(|(name, _)| name.to_owned())
        .collect();
    for name in names {
        driftwatch_sql::template::check(&action.templates, &name, &known, &samples)
            .map_err(|e| (name, e))?;
    }
    Ok(())
}

/// A notification with every field set, for checking templates.
fn sample(action: &str, status: Status) -> Notification {
    let resolved = status == Status::Resolved;
    let alert = AlertView {
        fingerprint: "0123456789abcdef".into(),
        rule: "sample_rule".into(),
        severity: "warning".into(),
        status,
        model_id: "sample-model".into(),
        model_version: Some("v1".into()),
        window_start: 1_767_225_600_000,
        window_end: 1_767_229_200_000,
        value: Some(0.5),
        labels: [("rule", "sample_rule"), ("model_id", "sample-model")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        annotations: [
            ("summary", "a sample alert"),
            ("description", "checks templates"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        identity: "{}".into(),
        starts_at: 1_767_229_200_000,
        fired_at: Some(1_767_229_200_000),
        ends_at: resolved.then_some(1_767_232_800_000),
        evidence: Some(json!({
            "window": { "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z" },
            "metrics": { "predictions": 1000, "labeled": 800, "label_coverage": 0.8, "revision": 2, "final": false, "values": { "accuracy": 0.7 } },
            "drift": { "features_compared": 10, "features_warning": 1, "features_drifted": 2, "drift_share": 0.2 },
            "drifted_features": [{ "feature": "age", "kind": "numeric", "level": "drift", "ks": 0.2, "wasserstein_norm": 0.4, "psi": 0.3, "js": 0.2 }],
            "links": { "model": "http://127.0.0.1:9797/v1/models/sample-model" },
        })),
    };
    Notification {
        key: "0123456789abcdef0123456789abcdef".into(),
        action: action.to_owned(),
        status: status.as_str().to_owned(),
        group: alert.labels.clone(),
        alerts: vec![alert],
        time: 1_767_232_800_000,
        repeat: resolved,
    }
}

/// Preset inputs when none are configured: name → template.
pub fn default_inputs() -> Vec<(String, String)> {
    [
        ("model_id", "{{ common_labels.model_id }}"),
        ("model_version", "{{ common_labels.model_version }}"),
        ("rule", "{{ common_labels.rule }}"),
        ("alert_key", "{{ key }}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The template context of a notification.
pub fn context(n: &Notification) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "fingerprint": a.fingerprint,
                "rule": a.rule,
                "severity": a.severity,
                "status": a.status.as_str(),
                "model_id": a.model_id,
                "model_version": a.model_version,
                "window_start": rfc3339(a.window_start),
                "window_end": rfc3339(a.window_end),
                "value": a.value,
                "labels": a.labels,
                "annotations": a.annotations,
                "starts_at": rfc3339(a.starts_at),
                "fired_at": a.fired_at.map(rfc3339),
                "ends_at": a.ends_at.map(rfc3339),
                "evidence": a.evidence,
            })
        })
        .collect();
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == crate::alert::Status::Firing)
        .count();
    json!({
        "key": n.key,
        "action": n.action,
        "status": n.status,
        "group": n.group,
        "common_labels": n.common_labels(),
        "alerts": alerts,
        "firing": firing,
        "resolved": n.alerts.len() - firing,
        "repeat": n.repeat,
        "time": rfc3339(n.time),
    })
}

/// Renders the action's template `name` for `n`.
pub fn render(action: &Action, name: &str, ctx: &Value) -> Result<String> {
    let fail = |message: String| Error::Template {
        action: action.name.clone(),
        template: name.to_owned(),
        message,
    };
    let t = action
        .templates
        .get_template(name)
        .map_err(|e| fail(e.to_string()))?;
    t.render(ctx).map_err(|e| fail(e.to_string()))
}

/// Whether the action has template `name`.
pub fn has(action: &Action, name: &str) -> bool {
    action.templates.get_template(name).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::alert::{AlertView, Status};
    use crate::config::{ActionConfig, Actions};

    #[test]
    fn the_html_body_escapes_values_from_events_and_the_text_does_not() {
        let raw: BTreeMap<String, ActionConfig> = toml::from_str(
            "[mail]\nkind = \"email\"\nsmtp_host = \"m\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n",
        )
        .expect("config");
        let actions = Actions::from_config(&raw, &|_| None).expect("valid");
        let action = actions.get("mail").expect("mail");
        let alert = AlertView {
            fingerprint: "f".into(),
            rule: "r".into(),
            severity: "critical".into(),
            status: Status::Firing,
            model_id: "m".into(),
            model_version: None,
            window_start: 0,
            window_end: 1,
            value: None,
            labels: BTreeMap::new(),
            annotations: [(
                "summary".to_owned(),
                "category <script>x</script> & co".to_owned(),
            )]
            .into(),
            identity: "{}".into(),
            starts_at: 0,
            fired_at: Some(1),
            ends_at: None,
            evidence: None,
        };
        let n = Notification {
            key: "k".into(),
            action: "mail".into(),
            status: "firing".into(),
            group: BTreeMap::new(),
            alerts: vec![alert],
            time: 1,
            repeat: false,
        };
        let ctx = context(&n);
        let html = render(action, "html", &ctx).expect("html");
        assert!(
            html.contains("category &lt;script&gt;x&lt;&#x2f;script&gt; &amp; co"),
            "{html}"
        );
        let text = render(action, "text", &ctx).expect("text");
        assert!(text.contains("category <script>x</script> & co"), "{text}");
    }
    fn action(config: &str) -> Arc<Action> {
        let raw: BTreeMap<String, ActionConfig> = toml::from_str(config).expect("config");
        let actions = Actions::from_config(&raw, &|_| Some("https://chat.example/hook".into()))
            .expect("valid");
        actions.get("a").expect("a").clone()
    }

    fn hostile(model_id: &str, summary: &str) -> Value {
        let mut n = sample("a", Status::Firing);
        n.alerts[0].model_id = model_id.to_owned();
        n.alerts[0]
            .annotations
            .insert("summary".into(), summary.to_owned());
        context(&n)
    }

    #[test]
    fn a_json_body_escapes_every_value_and_tojson_writes_whole_values() {
        let a = action(
            r#"[a]
kind = "webhook"
url = "http://127.0.0.1:1/"
body = '{"model": "{{ alerts[0].model_id }}", "summary": "{{ alerts[0].annotations.summary | upper }}", "labels": {{ alerts[0].labels | tojson }}, "value": {{ alerts[0].value }}}'
"#,
        );
        let ctx = hostile("x\", \"injected\": \"yes", "line\nbreak \u{1b}[31m\"");
        let body = render(&a, "body", &ctx).expect("body");
        let json: serde_json::Value = serde_json::from_str(&body).expect(&body);
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["labels", "model", "summary", "value"]);
        assert_eq!(json["model"], "x\", \"injected\": \"yes");
        assert_eq!(json["summary"], "LINE\nBREAK \u{1b}[31M\"");
        assert_eq!(json["labels"]["rule"], "sample_rule");
        assert_eq!(json["value"], 0.5);
    }

    #[test]
    fn a_body_declared_as_another_type_is_not_json_escaped() {
        let a = action(
            r#"[a]
kind = "webhook"
url = "http://127.0.0.1:1/"
body = "model={{ alerts[0].model_id }}"
headers = { Content-Type = "text/plain" }
"#,
        );
        let body = render(&a, "body", &hostile("a\"b", "")).expect("body");
        assert_eq!(body, "model=a\"b");
    }

    #[test]
    fn chat_text_escapes_markup_and_breaks_mentions_from_values() {
        let a = action(
            "[a]\nkind = \"chat\"\nurl_env = \"CHAT_URL\"\ntext = \"<{{ alerts[0].model_id }}> {{ alerts[0].annotations.summary }}\"\n",
        );
        let text = render(&a, "text", &hostile("<!channel>", "a & b @here mail@x")).expect("text");
        assert_eq!(
            text,
            "<&lt;!channel&gt;> a &amp; b @\u{2060}here mail@\u{2060}x"
        );
    }

    #[test]
    fn templates_with_unknown_filters_or_variables_are_refused_at_load() {
        let load = |extra: &str| {
            let raw: BTreeMap<String, ActionConfig> = toml::from_str(&format!(
                "[a]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n{extra}"
            ))
            .expect("config");
            Actions::from_config(&raw, &|_| None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let e = load("body = \"{{ status | shout }}\"").expect_err("unknown filter");
        assert!(
            e.starts_with("actions.a.body: template: unknown filter"),
            "{e}"
        );
        assert!(e.contains("shout"), "{e}");
        let e = load("body = \"{{ modle }}\"").expect_err("unknown variable");
        assert!(
            e.starts_with("actions.a.body: template: unknown variable modle"),
            "{e}"
        );
        // a filter reached only for resolved alerts is checked too
        let e = load("body = \"{% if status == 'resolved' %}{{ key | nope }}{% endif %}\"")
            .expect_err("resolved branch");
        assert!(e.contains("nope"), "{e}");
        load("body = \"{{ alerts | tojson }}\"").expect("fine");
    }
}
