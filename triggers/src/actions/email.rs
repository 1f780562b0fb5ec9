//! The email action: one message per notification, plain text and HTML,
//! over SMTP with STARTTLS, implicit TLS, or plain for a local relay. The
//! message id is made from the idempotency key, so a repeated attempt
//! carries the same `Message-ID`.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Attempt;
use crate::config::{Action, Email, Tls};
use crate::group::Notification;
use crate::render::{context, render};

/// The message of notification `n`.
pub fn message(action: &Action, email: &Email, n: &Notification) -> Result<Message, String> {
    let ctx = context(n);
    let subject = render(action, "subject", &ctx).map_err(|e| e.to_string())?;
    let text = render(action, "text", &ctx).map_err(|e| e.to_string())?;
    let html = render(action, "html", &ctx).map_err(|e| e.to_string())?;
    let from: Mailbox = email.from.parse().map_err(|e| format!("from: {e}"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(subject.trim().replace(['\r', '\n'], " "))
        .message_id(Some(format!("<{}@driftwatch>", n.key)));
    for to in &email.to {
        builder = builder.to(to.parse::<Mailbox>().map_err(|e| format!("to: {e}"))?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| e.to_string())
}

/// Sends `n` by email.
pub async fn send(action: &Action, email: &Email, n: &Notification) -> Attempt {
    let message = match message(action, email, n) {
        Ok(m) => m,
        Err(e) => return Attempt::Refused(format!("the message: {e}")),
    };
    let builder = match email.tls {
        Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.host),
        Tls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.host),
        Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &email.host,
        )),
    };
    let mut builder = match builder {
        Ok(b) => b.port(email.port).timeout(Some(action.retry.timeout)),
        Err(e) => return Attempt::Refused(format!("SMTP server {}: {e}", email.host)),
    };
    if let Some((user, password)) = &email.credentials {
        builder = builder.credentials(Credentials::new(
            user.expose().to_owned(),
            password.expose().to_owned(),
        ));
    }
    let transport = builder.build();
    match transport.send(message).await {
        Ok(response) => Attempt::Delivered {
            status: Some(response.code().to_string()),
            job_id: None,
        },
        Err(e) if e.is_permanent() => {
            Attempt::Refused(format!("SMTP {}:{}: {e}", email.host, email.port))
        }
        Err(e) => Attempt::Retry(format!("SMTP {}:{}: {e}", email.host, email.port)),
    }
}
