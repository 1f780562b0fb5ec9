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
//! | `alerts` | each alert: `rule`, `severity`, `status`, `model_id`, `model_version`, `window_start`, `window_end`, `value`, `labels`, `annotations`, `starts_at`, `fired_at`, `ends_at`, `fingerprint` |
//! | `firing`, `resolved` | how many alerts of each |
//! | `repeat` | whether it repeats an earlier notification |
//! | `time` | when it was made (event time) |
//!
//! Times are RFC 3339 text.

use serde_json::{Value, json};

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
}
