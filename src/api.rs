//! The HTTP API of `driftwatch run`: routes over the engine's service
//! ([`Shared`]: the process SQL engine, the sources' status; the HTTP
//! ingest source). Described for clients in `docs/openapi.yaml`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use driftwatch_engine::pipeline::Outcome;
use driftwatch_engine::service::{HttpIngest, Shared, http::NotTaken};
use serde_json::{Value, json};

mod metrics;

/// What the routes share.
struct Api {
    shared: Shared,
    ingest: Option<Arc<HttpIngest>>,
    token: Option<String>,
}

type Shared_ = State<Arc<Api>>;

/// Where and how the API listens.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Largest body taken.
    pub max_body: usize,
    /// The bearer token every route but health asks for.
    pub token: Option<String>,
}

/// Refuses to listen off the loopback without a token: anyone who can
/// reach the port could read every model's figures and post events.
pub fn check_access(options: &ApiOptions) -> anyhow::Result<()> {
    if options.token.is_none() && !options.listen.ip().is_loopback() {
        anyhow::bail!(
            "api.listen = {} is not a loopback address and DRIFTWATCH_API_TOKEN is not set: \
             set a token (clients then send `Authorization: Bearer <token>`) or listen on 127.0.0.1",
            options.listen
        );
    }
    Ok(())
}

/// The routes.
pub fn router(shared: Shared, ingest: Option<Arc<HttpIngest>>, options: &ApiOptions) -> Router {
    let api = Arc::new(Api {
        shared,
        ingest,
        token: options.token.clone(),
    });
    let guarded = Router::new()
        .route("/metrics", get(metrics::serve))
        .route("/v1/events", post(post_events))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/alerts", get(alerts))
        .route("/v1/query", post(query))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&api), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(options.max_body))
        .with_state(api)
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

/// Why a request failed, answered as a JSON error.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        ApiError {
            status,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = error(self.status, &self.message);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        // past api.max_body: 413
        ApiError::new(r.status(), r.body_text())
    }
}

type Answer = Result<Response, ApiError>;

async fn authorize(State(api): Shared_, request: Request, next: Next) -> Response {
    let Some(token) = &api.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "this route needs `Authorization: Bearer <token>` with the service's DRIFTWATCH_API_TOKEN",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(api): Shared_) -> Response {
    if api.shared.status.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let waiting: Vec<&str> = api
            .shared
            .status
            .sources()
            .into_iter()
            .filter(|(_, s)| !s.ready)
            .map(|(name, _)| name)
            .collect();
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}", waiting.join(", ")),
        )
    }
}

/// Runs blocking engine work off the reactor; an error becomes `status`.
async fn blocking<T: Send + 'static>(
    status: StatusCode,
    work: impl FnOnce() -> driftwatch_engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::new(status, e)),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// `POST /v1/events`: JSON Lines, or one JSON event as `application/json`;
/// each line accepted or refused with its reason.
async fn post_events(
    State(api): Shared_,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body?;
    let Some(ingest) = &api.ingest else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "HTTP ingest is off (api.ingest = false)",
        ));
    };
    let submitted = ingest.submit(&body, is_json(&headers)).map_err(|e| {
        let status = match e {
            NotTaken::Busy | NotTaken::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            NotTaken::Empty => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e)
    })?;
    let results = match submitted.await {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service stopped before these events were applied",
            ));
        }
    };
    let accepted = results
        .iter()
        .filter(|r| r.outcome == Outcome::Accepted)
        .count();
    let rejected: Vec<Value> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Accepted => None,
            Outcome::Rejected { reason, message } => Some(json!({
                "line": r.line, "reason": reason, "message": message,
            })),
        })
        .collect();
    Ok(axum::Json(json!({
        "accepted": accepted,
        "rejected": rejected.len(),
        "errors": rejected,
    }))
    .into_response())
}

async fn figures(
    api: &Api,
) -> Result<std::collections::BTreeMap<String, driftwatch_engine::figures::ModelFigures>, ApiError>
{
    let queries = Arc::clone(&api.shared.queries);
    blocking(StatusCode::INTERNAL_SERVER_ERROR, move || {
        driftwatch_engine::figures::model_figures(&queries)
    })
    .await
}

async fn models(State(api): Shared_) -> Answer {
    let figures = figures(&api).await?;
    Ok(axum::Json(json!({ "models": figures })).into_response())
}

async fn model(State(api): Shared_, Path(id): Path<String>) -> Answer {
    let figures = figures(&api).await?;
    match figures.get(&id) {
        Some(f) => Ok(axum::Json(json!({ "model_id": id, "figures": f })).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no windows of model {id:?} yet"),
        )),
    }
}

async fn alerts(State(api): Shared_) -> Answer {
    let queries = Arc::clone(&api.shared.queries);
    let view = blocking(StatusCode::INTERNAL_SERVER_ERROR, move || {
        driftwatch_engine::alerting::alerts(&queries, 50)
    })
    .await?;
    let internal = |e: anyhow::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    Ok(axum::Json(json!({
        "current": rows_json(&view.current).map_err(internal)?,
        "recent": rows_json(&view.recent).map_err(internal)?,
    }))
    .into_response())
}

/// `POST /v1/query`: `{"sql": "...", "format": "json" | "csv"}`, or the
/// SQL itself as `text/plain`; the limits of rules apply.
async fn query(
    State(api): Shared_,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let (sql, csv) = if is_json(&headers) {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Query {
            sql: String,
            #[serde(default)]
            format: Option<String>,
        }
        let q: Query = serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "expected {{\"sql\": \"...\", \"format\": \"json\" | \"csv\"}}: {e}"
            ))
        })?;
        match q.format.as_deref() {
            None | Some("json") => (q.sql, false),
            Some("csv") => (q.sql, true),
            Some(other) => {
                return Err(bad(format!(
                    "format {other:?}: expected \"json\" or \"csv\""
                )));
            }
        }
    } else {
        let sql =
            String::from_utf8(body.to_vec()).map_err(|_| bad("the query is not UTF-8".into()))?;
        (sql, false)
    };
    let queries = Arc::clone(&api.shared.queries);
    let (schema, batches) = blocking(StatusCode::BAD_REQUEST, move || {
        queries.query(&sql).map_err(driftwatch_engine::Error::from)
    })
    .await?;
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    if csv {
        let mut out = Vec::new();
        {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                writer.write(&arrow::array::RecordBatch::new_empty(schema))
            } else {
                batches.iter().try_for_each(|b| writer.write(b))
            }
            .map_err(|e| internal(e.to_string()))?;
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let rows = rows_json(&batches).map_err(|e| internal(e.to_string()))?;
    Ok(axum::Json(json!({ "columns": columns, "rows": rows })).into_response())
}

/// Rows as a JSON array of objects.
fn rows_json(batches: &[arrow::array::RecordBatch]) -> anyhow::Result<Value> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn listening_off_the_loopback_needs_a_token() {
        let options = |listen: &str, token: Option<&str>| ApiOptions {
            listen: listen.parse().expect("address"),
            max_body: 1 << 20,
            token: token.map(str::to_owned),
        };
        assert!(check_access(&options("127.0.0.1:9797", None)).is_ok());
        assert!(check_access(&options("[::1]:9797", None)).is_ok());
        let refused = check_access(&options("0.0.0.0:9797", None)).expect_err("refused");
        assert!(
            refused.to_string().contains("DRIFTWATCH_API_TOKEN"),
            "{refused}"
        );
        assert!(check_access(&options("0.0.0.0:9797", Some("t"))).is_ok());
    }
}
