//! The actions: what one delivery attempt of a notification does.

pub mod email;
pub mod webhook;

use std::time::Duration;

use crate::config::{Action, ActionKind};
use crate::group::Notification;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver took it.
    Delivered {
        /// The receiver's status (HTTP status, SMTP reply code).
        status: Option<String>,
        /// The job or run it started, when known.
        job_id: Option<String>,
        /// The model version the receiver said the job delivers, when it did.
        model_version: Option<String>,
    },
    /// Failed; worth another attempt (network, timeout, 5xx, 429).
    Retry(String),
    /// Refused for good (4xx, bad address).
    Refused(String),
}

/// Makes one attempt to deliver `n` through `action`, signed at clock time
/// `now_ms`.
pub async fn attempt(
    client: &reqwest::Client,
    action: &Action,
    n: &Notification,
    now_ms: i64,
) -> Attempt {
    let outcome = match &action.kind {
        ActionKind::Email(email) => email::send(action, email, n).await,
        ActionKind::Webhook(hook) => {
            let request = match webhook::prepare(action, hook, n, now_ms.div_euclid(1000)) {
                Ok(r) => r,
                Err(e) => return Attempt::Refused(e.to_string()),
            };
            send(
                client,
                &hook.preset,
                hook.basic.as_ref(),
                request,
                &n.key,
                action.retry.timeout,
            )
            .await
        }
    };
    // what a receiver answered is stored (audit log, alerts table): never
    // with a credential in it
    let redact = |m: String| crate::redact::redact(&m, &crate::redact::secrets(action));
    match outcome {
        Attempt::Retry(m) => Attempt::Retry(redact(m)),
        Attempt::Refused(m) => Attempt::Refused(redact(m)),
        delivered @ Attempt::Delivered { .. } => delivered,
    }
}

/// The most of a receiver's answer that is read: enough for any job id or
/// error message, and a receiver cannot fill the memory.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

async fn send(
    client: &reqwest::Client,
    preset: &crate::config::Preset,
    basic: Option<&(crate::config::Secret, crate::config::Secret)>,
    request: webhook::Request,
    key: &str,
    timeout: Duration,
) -> Attempt {
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut rb = client.request(method, &request.url).timeout(timeout);
    for (k, v) in &request.headers {
        rb = rb.header(k, v);
    }
    if let Some((user, password)) = basic {
        rb = rb.basic_auth(user.expose(), Some(password.expose()));
    }
    let mut response = match rb.body(request.body).send().await {
        Ok(r) => r,
        // without the URL: a chat webhook's URL is a secret
        Err(e) => return Attempt::Retry(e.without_url().to_string()),
    };
    let status = response.status().as_u16();
    let mut body: Vec<u8> = Vec::new();
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ANSWER_BYTES);
    match webhook::answer(preset, key, status, &body) {
        webhook::Answer::Delivered(job_id) => Attempt::Delivered {
            status: Some(status.to_string()),
            job_id,
            model_version: webhook::named_version(preset, &body),
        },
        webhook::Answer::Retry(m) => Attempt::Retry(m),
        webhook::Answer::Refused(m) => Attempt::Refused(m),
    }
}
