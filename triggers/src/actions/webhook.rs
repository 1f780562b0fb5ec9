//! Webhook and chat requests: what each preset sends, the signature, and
//! what a receiver's answer means.
//!
//! Every request carries
//! - `Idempotency-Key: <key>` — the same for every attempt of a notification,
//!   in every process, so that a receiver can drop repeats;
//! - with `hmac_secret_env`, `X-Driftwatch-Timestamp: <unix seconds>` and
//!   `X-Driftwatch-Signature: sha256=<hex>`, the HMAC-SHA256 under the secret
//!   of the bytes `<timestamp>.<body>`.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::config::{Action, Preset, Webhook};
use crate::error::{Error, Result};
use crate::group::Notification;
use crate::render::{context, render};

/// GitHub's REST API version the presets are written against.
pub const GITHUB_API_VERSION: &str = "2022-11-28";

/// A request ready to send. Its headers may hold secrets: it is never logged.
pub struct Request {
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Headers, secrets included.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn url_with(base: &str, segments: &[&str]) -> Result<String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| Error::Config {
        key: "url".into(),
        message: e.to_string(),
    })?;
    {
        let mut path = url.path_segments_mut().map_err(|()| Error::Config {
            key: "url".into(),
            message: "cannot take a path".into(),
        })?;
        path.pop_if_empty();
        for s in segments {
            path.extend(s.split('/'));
        }
    }
    Ok(url.to_string())
}

/// The preset inputs rendered, in the configured order: name → text.
fn inputs(action: &Action, ctx: &Value) -> Result<Vec<(String, String)>> {
    action
        .inputs
        .iter()
        .map(|name| Ok((name.clone(), render(action, &format!("input.{name}"), ctx)?)))
        .collect()
}

fn object(pairs: Vec<(String, String)>) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// Builds the request of `hook` for notification `n`, signed at `timestamp`
/// (unix seconds) when the action has a secret.
pub fn prepare(
    action: &Action,
    hook: &Webhook,
    n: &Notification,
    timestamp: i64,
) -> Result<Request> {
    let ctx = context(n);
    let base = hook.url.expose();
    let rule = n
        .common_labels()
        .get("rule")
        .cloned()
        .unwrap_or_else(|| "alerts".into());
    let mut headers: Vec<(String, String)> = Vec::new();
    let (url, body) = match &hook.preset {
        Preset::Generic => {
            let body = if crate::render::has(action, "body") {
                render(action, "body", &ctx)?.into_bytes()
            } else {
                serde_json::to_vec(&ctx).map_err(crate::error::state("a notification"))?
            };
            (base.to_owned(), body)
        }
        Preset::Chat => {
            let text = render(action, "text", &ctx)?;
            (
                base.to_owned(),
                serde_json::to_vec(&json!({ "text": text })).unwrap_or_default(),
            )
        }
        Preset::GithubRepositoryDispatch {
            repository,
            event_type,
        } => {
            let mut payload = object(inputs(action, &ctx)?);
            payload.insert("status".into(), Value::String(n.status.clone()));
            github_headers(&mut headers);
            let body = json!({ "event_type": event_type, "client_payload": payload });
            (
                url_with(base, &["repos", repository, "dispatches"])?,
                body.to_string().into_bytes(),
            )
        }
        Preset::GithubWorkflowDispatch {
            repository,
            workflow,
            git_ref,
        } => {
            github_headers(&mut headers);
            let body = json!({ "ref": git_ref, "inputs": object(inputs(action, &ctx)?) });
            (
                url_with(
                    base,
                    &[
                        "repos",
                        repository,
                        "actions",
                        "workflows",
                        workflow,
                        "dispatches",
                    ],
                )?,
                body.to_string().into_bytes(),
            )
        }
        Preset::Airflow {
            dag_id,
            api_version,
        } => {
            let mut body = json!({
                "dag_run_id": format!("driftwatch-{}", n.key),
                "conf": object(inputs(action, &ctx)?),
            });
            if api_version == "v2" {
                // Airflow 3 requires the field; null runs the DAG now
                body["logical_date"] = Value::Null;
            }
            (
                url_with(base, &["api", api_version, "dags", dag_id, "dagRuns"])?,
                body.to_string().into_bytes(),
            )
        }
        Preset::Kubeflow {
            pipeline_id,
            pipeline_version_id,
            experiment_id,
        } => {
            let mut body = json!({
                "display_name": format!("driftwatch-{rule}-{}", &n.key[..8]),
                "description": format!("started by driftwatch: {} {rule} (key {})", n.status, n.key),
                "pipeline_version_reference": {
                    "pipeline_id": pipeline_id,
                    "pipeline_version_id": pipeline_version_id,
                },
                "runtime_config": { "parameters": object(inputs(action, &ctx)?) },
            });
            if let Some(e) = experiment_id {
                body["experiment_id"] = Value::String(e.clone());
            }
            (
                url_with(base, &["apis", "v2beta1", "runs"])?,
                body.to_string().into_bytes(),
            )
        }
        Preset::Argo {
            namespace,
            workflow_template,
        } => {
            let parameters: Vec<String> = inputs(action, &ctx)?
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let body = json!({
                "namespace": namespace,
                "resourceKind": "WorkflowTemplate",
                "resourceName": workflow_template,
                "submitOptions": {
                    "generateName": format!("{workflow_template}-"),
                    "parameters": parameters,
                    "labels": format!("driftwatch.io/alert-key={}", n.key),
                },
            });
            (
                url_with(base, &["api", "v1", "workflows", namespace, "submit"])?,
                body.to_string().into_bytes(),
            )
        }
    };
    headers.push(("Content-Type".into(), "application/json".into()));
    headers.push((
        "User-Agent".into(),
        concat!("driftwatch/", env!("CARGO_PKG_VERSION")).into(),
    ));
    headers.push(("Idempotency-Key".into(), n.key.clone()));
    for (k, v) in &hook.headers {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        headers.push((k.clone(), v.clone()));
    }
    for (k, v) in &hook.secret_headers {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        headers.push((k.clone(), v.expose().to_owned()));
    }
    if let Some(token) = &hook.token {
        headers.push(("Authorization".into(), format!("Bearer {}", token.expose())));
    }
    if let Some(secret) = &hook.hmac_secret {
        headers.push(("X-Driftwatch-Timestamp".into(), timestamp.to_string()));
        headers.push((
            "X-Driftwatch-Signature".into(),
            signature(secret.expose().as_bytes(), timestamp, &body),
        ));
    }
    Ok(Request {
        method: hook.method.clone(),
        url,
        headers,
        body,
    })
}

fn github_headers(headers: &mut Vec<(String, String)>) {
    headers.push(("Accept".into(), "application/vnd.github+json".into()));
    headers.push(("X-GitHub-Api-Version".into(), GITHUB_API_VERSION.into()));
}

/// What a receiver's answer means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken; the job or run it started, when known.
    Delivered(Option<String>),
    /// Worth another attempt.
    Retry(String),
    /// Refused for good (a 4xx other than 408 and 429).
    Refused(String),
}

/// The model version a receiver's answer says its job will deliver: the
/// `model_version` of a generic webhook's JSON answer (the presets' systems
/// answer in their own shapes, which name no version).
pub fn named_version(preset: &Preset, body: &[u8]) -> Option<String> {
    if *preset != Preset::Generic {
        return None;
    }
    let json: Value = serde_json::from_slice(body).ok()?;
    json.get("model_version")?
        .as_str()
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_owned)
}

/// Reads the answer `status` / `body` to a request of `preset` that was sent
/// for notification `key`.
pub fn answer(preset: &Preset, key: &str, status: u16, body: &[u8]) -> Answer {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let field = |path: &[&str]| {
        let mut v = json.as_ref()?;
        for p in path {
            v = v.get(p)?;
        }
        text(v)
    };
    if (200..300).contains(&status) {
        let job = match preset {
            Preset::Generic => field(&["job_id"])
                .or_else(|| field(&["run_id"]))
                .or_else(|| field(&["id"])),
            Preset::GithubWorkflowDispatch { .. } => field(&["workflow_run_id"]),
            Preset::Airflow { .. } => field(&["dag_run_id"]),
            Preset::Kubeflow { .. } => field(&["run_id"]),
            Preset::Argo { .. } => field(&["metadata", "name"]),
            Preset::GithubRepositoryDispatch { .. } | Preset::Chat => None,
        };
        return Answer::Delivered(job);
    }
    // the whole answer: it is redacted, then cut, where the attempt ends
    let what = format!("HTTP {status}: {}", String::from_utf8_lossy(body));
    match (preset, status) {
        // the run named after this key exists: an earlier attempt made it
        (Preset::Airflow { .. }, 409) => Answer::Delivered(Some(format!("driftwatch-{key}"))),
        (_, 408 | 429) | (_, 500..=599) => Answer::Retry(what),
        (_, 300..=399) => Answer::Refused(format!(
            "HTTP {status}: redirects are not followed (they would carry the secret headers \
             and the signature elsewhere); set the action's url to the final address"
        )),
        _ => Answer::Refused(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // RFC 4231 does not cover this framing; the value was computed with
        // Python: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn answers_name_the_job_and_say_what_to_retry() {
        let airflow = Preset::Airflow {
            dag_id: "d".into(),
            api_version: "v1".into(),
        };
        assert_eq!(
            answer(
                &airflow,
                "k",
                200,
                br#"{"dag_run_id": "driftwatch-k", "state": "queued"}"#
            ),
            Answer::Delivered(Some("driftwatch-k".into()))
        );
        assert_eq!(
            answer(&airflow, "k", 409, b"{}"),
            Answer::Delivered(Some("driftwatch-k".into()))
        );
        let argo = Preset::Argo {
            namespace: "n".into(),
            workflow_template: "t".into(),
        };
        assert_eq!(
            answer(&argo, "k", 200, br#"{"metadata": {"name": "t-x7k2p"}}"#),
            Answer::Delivered(Some("t-x7k2p".into()))
        );
        assert!(
            matches!(answer(&Preset::Generic, "k", 503, b"busy"), Answer::Retry(m) if m == "HTTP 503: busy")
        );
        assert!(matches!(
            answer(&Preset::Generic, "k", 429, b""),
            Answer::Retry(_)
        ));
        assert!(matches!(
            answer(&Preset::Generic, "k", 404, b""),
            Answer::Refused(_)
        ));
        assert_eq!(
            answer(&Preset::Chat, "k", 200, b"ok"),
            Answer::Delivered(None)
        );
        let named = br#"{"job_id": "j1", "model_version": "v13"}"#;
        assert_eq!(
            named_version(&Preset::Generic, named).as_deref(),
            Some("v13")
        );
        assert_eq!(named_version(&Preset::Chat, named), None);
        assert_eq!(named_version(&Preset::Generic, b"{\"job_id\": 1}"), None);
    }
}
