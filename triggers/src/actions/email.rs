//! The email action: one message per notification, plain text and HTML,
//! over SMTP with STARTTLS, implicit TLS, or plain for a local relay. The
//! message id is made from the idempotency key, so a repeated attempt
//! carries the same `Message-ID`.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client as smtp_tls;
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

/// The TLS setting of `email`: the public roots, and its own CA if it has one.
fn tls(email: &Email) -> Result<smtp_tls::Tls, lettre::transport::smtp::Error> {
    if email.tls == Tls::None {
        return Ok(smtp_tls::Tls::None);
    }
    let mut params = smtp_tls::TlsParameters::builder(email.host.clone());
    if let Some(pem) = &email.ca_pem {
        params = params.add_root_certificate(smtp_tls::Certificate::from_pem(pem)?);
    }
    let params = params.build()?;
    Ok(match email.tls {
        Tls::Implicit => smtp_tls::Tls::Wrapper(params),
        _ => smtp_tls::Tls::Required(params),
    })
}

/// Sends `n` by email.
pub async fn send(action: &Action, email: &Email, n: &Notification) -> Attempt {
    let message = match message(action, email, n) {
        Ok(m) => m,
        Err(e) => return Attempt::Refused(format!("the message: {e}")),
    };
    let tls = match tls(email) {
        Ok(t) => t,
        Err(e) => return Attempt::Refused(format!("TLS for {}: {e}", email.host)),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.host)
        .port(email.port)
        .tls(tls)
        .timeout(Some(action.retry.timeout));
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
            model_version: None,
        },
        Err(e) if e.is_permanent() => {
            Attempt::Refused(format!("SMTP {}:{}: {e}", email.host, email.port))
        }
        Err(e) => Attempt::Retry(format!("SMTP {}:{}: {e}", email.host, email.port)),
    }
}
