//! The HTTP API of `driftwatch run`: routes over the engine's service
//! ([`Shared`]: the process SQL engine, the sources' status; the HTTP
//! ingest source). Described for clients in `docs/openapi.yaml`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use driftwatch_engine::pipeline::Outcome;
use driftwatch_engine::service::{HttpIngest, Shared, http::NotTaken};
use serde_json::{Value, json};

mod metrics;
mod serve;

pub use serve::{ConnectionLimits, serve};

/// What the routes share.
struct Api {
    shared: Shared,
    ingest: Option<Arc<HttpIngest>>,
    token: Option<String>,
    /// the service's settings (where references and silences are kept,
    /// how a reference is built)
    config: driftwatch_engine::Config,
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

/// Every route: (method, path, whether it asks for the token, handler).
/// `docs/openapi.json` describes exactly these (a test compares them).
fn routes() -> Vec<(Method, &'static str, bool, MethodRouter<Arc<Api>>)> {
    vec![
        (Method::GET, "/healthz", false, get(|| async { "ok\n" })),
        (Method::GET, "/readyz", false, get(readyz)),
        (Method::GET, "/metrics", true, get(metrics::serve)),
        (Method::POST, "/v1/events", true, post(post_events)),
        (Method::GET, "/v1/models", true, get(models)),
        (Method::GET, "/v1/models/{id}", true, get(model)),
        (
            Method::GET,
            "/v1/models/{id}/windows",
            true,
            get(model_windows),
        ),
        (
            Method::PUT,
            "/v1/models/{id}/versions/{version}/reference",
            true,
            put(upload_reference),
        ),
        (Method::GET, "/ui/models/{id}", true, get(model_page)),
        (Method::GET, "/v1/alerts", true, get(alerts)),
        (Method::POST, "/v1/query", true, post(query)),
        (Method::GET, "/v1/silences", true, get(list_silences)),
        (Method::POST, "/v1/silences", true, post(add_silence)),
        (
            Method::DELETE,
            "/v1/silences/{id}",
            true,
            delete(end_silence),
        ),
    ]
}

/// The routes.
pub fn router(
    shared: Shared,
    ingest: Option<Arc<HttpIngest>>,
    options: &ApiOptions,
    config: &driftwatch_engine::Config,
) -> Router {
    let api = Arc::new(Api {
        shared,
        ingest,
        token: options.token.clone(),
        config: config.clone(),
    });
    let (mut open, mut guarded) = (Router::new(), Router::new());
    for (_, path, needs_token, handler) in routes() {
        if needs_token {
            guarded = guarded.route(path, handler);
        } else {
            open = open.route(path, handler);
        }
    }
    let guarded = guarded.route_layer(middleware::from_fn_with_state(Arc::clone(&api), authorize));
    open.merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method (docs/api.md lists each route's)",
            )
        })
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
        .and_then(bearer_token);
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

/// The token of an `Authorization` value of the Bearer scheme, whose name
/// is case-insensitive (RFC 7235 § 2.1: `bearer`, `BEARER`).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
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
            NotTaken::TooMany(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        ApiError::new(status, e)
    })?;
    let answer = match submitted.await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service stopped before these events were applied",
            ));
        }
    };
    let errors: Vec<Value> = answer
        .listed
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Accepted => None,
            Outcome::Rejected { reason, message } => Some(json!({
                "line": r.line, "reason": reason, "message": message,
            })),
        })
        .collect();
    Ok(axum::Json(json!({
        "accepted": answer.accepted,
        "rejected": answer.rejected,
        "rejected_by_reason": answer.rejected_by_reason,
        "errors": errors,
        "errors_not_listed": answer.rejected - errors.len(),
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

/// `GET /v1/models/{id}`: its latest figures, its versions and the
/// reference profiles stored for it.
async fn model(State(api): Shared_, Path(id): Path<String>) -> Answer {
    let figures = figures(&api).await?;
    let Some(f) = figures.get(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no windows of model {id:?} yet"),
        ));
    };
    let (queries, data_dir, model) = (
        Arc::clone(&api.shared.queries),
        api.config.data_dir.clone(),
        id.clone(),
    );
    let (windows, versions, loops, references) =
        blocking(StatusCode::INTERNAL_SERVER_ERROR, move || {
            let windows =
                driftwatch_engine::figures::model_windows(&queries, &model, i64::MIN, i64::MAX)?;
            let versions = driftwatch_engine::figures::model_versions(&queries, &model)?;
            let loops: Vec<_> = driftwatch_engine::figures::retraining_loops(&queries)?
                .into_iter()
                .filter(|l| l.model_id == model)
                .collect();
            let references: Vec<Value> = driftwatch_engine::reference::stored(&data_dir)?
                .into_iter()
                .filter(|(_, p)| p.model_id == model)
                .map(|(_, p)| {
                    json!({
                        "model_version": p.model_version,
                        "source": p.source,
                        "events": p.events,
                        "features": p.features.len(),
                    })
                })
                .collect();
            Ok((windows, versions, loops, references))
        })
        .await?;
    let internal = |e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    let rows = rows_json(&windows).map_err(internal)?;
    let versions = rows_json(&versions).map_err(internal)?;
    let latest: Vec<Value> = rows
        .as_array()
        .map(|r| r.iter().rev().take(10).rev().cloned().collect())
        .unwrap_or_default();
    Ok(axum::Json(json!({
        "model_id": id,
        "figures": f,
        "versions": versions,
        "retraining": loops,
        "references": references,
        "latest_windows": latest,
    }))
    .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    /// the body is a feature table (one row per prediction), not events
    #[serde(default)]
    table: bool,
}

/// `PUT /v1/models/{id}/versions/{version}/reference[?table=true]`: the
/// body (prediction events as JSON Lines, gzip or Parquet; with `table`, a
/// feature table) becomes that version's reference profile, stored in the
/// data directory and used from the next window on.
/// Most bytes an uploaded gzip file may decompress to, as a multiple of
/// its own size (JSON Lines compress about ten times; 2 MB of gzip holding
/// 2 GB of newlines took 160 CPU-seconds to be refused).
const MAX_UPLOAD_EXPANSION: u64 = 64;

/// Writes an uploaded file, a gzip one decompressed, at most
/// [`MAX_UPLOAD_EXPANSION`] times its size.
fn write_upload(path: &std::path::Path, body: &[u8]) -> driftwatch_engine::Result<()> {
    use std::io::Read;
    let io = |source| driftwatch_engine::Error::Io {
        path: path.to_owned(),
        source,
    };
    if !body.starts_with(&[0x1f, 0x8b]) {
        return std::fs::write(path, body).map_err(io);
    }
    let limit = MAX_UPLOAD_EXPANSION * body.len() as u64;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let copied = std::io::copy(
        &mut flate2::read::MultiGzDecoder::new(body).take(limit + 1),
        &mut out,
    )
    .map_err(|e| {
        driftwatch_engine::Error::Input(format!("the upload is not a readable gzip file: {e}"))
    })?;
    if copied > limit {
        return Err(driftwatch_engine::Error::Input(format!(
            "the upload decompresses to more than {limit} bytes ({MAX_UPLOAD_EXPANSION} times its \
             {} bytes): send it uncompressed, or build the profile with `driftwatch reference build`",
            body.len()
        )));
    }
    std::io::Write::flush(&mut out).map_err(io)
}

async fn upload_reference(
    State(api): Shared_,
    Path((id, version)): Path<(String, String)>,
    Query(kind): Query<Upload>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body holds no predictions: send the training or validation file",
        ));
    }
    let (config, shared) = (api.config.clone(), api.shared.references.clone());
    let (model, v) = (id.clone(), version.clone());
    let built = blocking(StatusCode::BAD_REQUEST, move || {
        let dir = config.data_dir.references();
        std::fs::create_dir_all(&dir).map_err(|source| driftwatch_engine::Error::Io {
            path: dir.clone(),
            source,
        })?;
        // the build reads a file (its format from its first bytes); the
        // name is this process's and this moment's, never the model's
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let upload = dir.join(format!(".upload-{}-{nanos}", std::process::id()));
        let written = write_upload(&upload, &body);
        if written.is_err() {
            let _ = std::fs::remove_file(&upload);
        }
        written?;
        let built = driftwatch_engine::reference::store_uploaded(
            &config, &shared, &upload, &model, &v, kind.table,
        );
        let _ = std::fs::remove_file(&upload);
        built
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "model_id": id,
            "model_version": version,
            "read": built.read,
            "predictions": built.used,
            "features": built.features,
            "refused": built.refusals(),
            "labelled": built.label_free.as_ref().map_or(0, |l| l.labelled),
            "performance_estimation": built.label_free.as_ref().is_some_and(|l| l.calibration.is_some()),
            "multivariate_components": built.label_free.as_ref().and_then(|l| l.components).map(|c| c.0),
        })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Span {
    from: Option<String>,
    to: Option<String>,
}

impl Span {
    /// `from` and `to` in ms, when given.
    fn bounds(&self) -> Result<(Option<i64>, Option<i64>), ApiError> {
        let parse = |name: &str, value: &Option<String>| match value {
            None => Ok(None),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("{name}={t:?}: {e}; expected RFC 3339, e.g. 2026-11-30T00:00:00Z"),
                    )
                }),
        };
        Ok((parse("from", &self.from)?, parse("to", &self.to)?))
    }
}

/// `GET /ui/models/{id}?from=&to=` (RFC 3339, both optional): the model's
/// report page over the live rows and the history.
async fn model_page(
    State(api): Shared_,
    Path(id): Path<String>,
    Query(span): Query<Span>,
) -> Answer {
    let (from, to) = span.bounds()?;
    let (queries, data_dir) = (Arc::clone(&api.shared.queries), api.config.data_dir.clone());
    let gathered = tokio::task::spawn_blocking(move || {
        driftwatch_engine::report::gather(
            &queries,
            &data_dir,
            &id,
            driftwatch_engine::report::Span { from, to },
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let report = match gathered {
        Ok(r) => r,
        Err(driftwatch_engine::Error::Input(m)) => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, m));
        }
        Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
    };
    let page = crate::report::html(&report, chrono::Utc::now().timestamp_millis());
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

/// `GET /v1/models/{id}/windows?from=&to=` (RFC 3339, both optional): the
/// model's closed windows that overlap the span, oldest first.
async fn model_windows(
    State(api): Shared_,
    Path(id): Path<String>,
    Query(span): Query<Span>,
) -> Answer {
    let (from, to) = span.bounds()?;
    let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
    let queries = Arc::clone(&api.shared.queries);
    let model = id.clone();
    let windows = blocking(StatusCode::INTERNAL_SERVER_ERROR, move || {
        driftwatch_engine::figures::model_windows(&queries, &model, from, to)
    })
    .await?;
    let rows =
        rows_json(&windows).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(axum::Json(json!({ "model_id": id, "windows": rows })).into_response())
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

/// A silence as the API shows it: its fields, times also in RFC 3339, and
/// whether it is active now.
fn silence_json(s: &driftwatch_triggers::Silence, now: i64) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("state".into(), json!(s.state(now)));
        o.insert(
            "starts".into(),
            json!(driftwatch_ingest::format_time(s.starts_at)),
        );
        o.insert(
            "ends".into(),
            json!(driftwatch_ingest::format_time(s.ends_at)),
        );
    }
    v
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(serde::Deserialize)]
struct ListSilences {
    /// also those that ended
    #[serde(default)]
    all: bool,
}

/// `GET /v1/silences[?all=true]`: the silences not ended (or all kept).
async fn list_silences(State(api): Shared_, Query(q): Query<ListSilences>) -> Answer {
    let path = api.config.data_dir.silences();
    let list = blocking(StatusCode::INTERNAL_SERVER_ERROR, move || {
        Ok(driftwatch_triggers::Silences::open(&path)?.list().to_vec())
    })
    .await?;
    let now = now_ms();
    let shown: Vec<Value> = list
        .iter()
        .filter(|s| q.all || s.ends_at > now)
        .map(|s| silence_json(s, now))
        .collect();
    Ok(axum::Json(json!({ "silences": shown })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    /// `label=value`, `label!=value`, `label=~regex`, `label!~regex`
    matchers: Vec<String>,
    /// how long, e.g. "2h"
    duration: String,
    /// RFC 3339; now when absent
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    created_by: String,
}

/// `POST /v1/silences`: adds a silence; `201` with it.
async fn add_silence(State(api): Shared_, body: Result<Bytes, BytesRejection>) -> Answer {
    let body = body?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let new: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"matchers\": [\"rule=...\"], \"duration\": \"2h\", \"starts_at\"?, \"comment\"?, \"created_by\"?}}: {e}"
        ))
    })?;
    let matchers = new
        .matchers
        .iter()
        .map(|m| {
            driftwatch_triggers::Matcher::parse(m).map_err(|e| bad(format!("matcher {m:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let length = humantime::parse_duration(&new.duration).map_err(|e| {
        bad(format!(
            "duration {:?}: {e}; expected e.g. \"2h\"",
            new.duration
        ))
    })?;
    let starts_at = match &new.starts_at {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| bad(format!("starts_at {t:?}: {e}; expected RFC 3339")))?
            .timestamp_millis(),
        None => now_ms(),
    };
    let path = api.config.data_dir.silences();
    let silence = blocking(StatusCode::BAD_REQUEST, move || {
        let mut silences = driftwatch_triggers::Silences::open(&path)?;
        Ok(silences.add(
            matchers,
            starts_at,
            starts_at.saturating_add(length.as_millis() as i64),
            &new.created_by,
            &new.comment,
        )?)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(silence_json(&silence, now_ms())),
    )
        .into_response())
}

/// `DELETE /v1/silences/{id}`: ends the silence whose id starts with `id` now.
async fn end_silence(State(api): Shared_, Path(id): Path<String>) -> Answer {
    let path = api.config.data_dir.silences();
    let now = now_ms();
    let ended = blocking(StatusCode::INTERNAL_SERVER_ERROR, move || {
        let mut silences = driftwatch_triggers::Silences::open(&path)?;
        let matching = silences
            .list()
            .iter()
            .filter(|s| s.id.starts_with(&id))
            .count();
        Ok(match matching {
            0 => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no silence with id {id:?}"),
            )),
            1 => Ok(silences.expire(&id, now)?),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{id:?} names more than one silence; give more of its id"),
            )),
        })
    })
    .await??;
    Ok(axum::Json(silence_json(&ended, now)).into_response())
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

    /// Regression (issue 41, m): `Authorization: bearer …` was refused; the
    /// scheme's name is case-insensitive (RFC 7235).
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value}");
        }
        assert_eq!(bearer_token("Basic t0k"), None);
        assert_eq!(bearer_token("Bearert0k"), None);
    }

    /// `docs/openapi.json` names each route once, with the right methods
    /// and security, and no route it does not name exists.
    #[test]
    fn the_openapi_document_describes_the_routes_that_exist() {
        let text = include_str!("../docs/openapi.json");
        let doc: Value = serde_json::from_str(text).expect("docs/openapi.json is JSON");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                if method == "parameters" {
                    continue;
                }
                // an operation without its own `security` takes the document's
                let open = op["security"].as_array().is_some_and(Vec::is_empty);
                documented.insert((method.to_uppercase(), path.clone(), !open));
            }
        }
        let served: std::collections::BTreeSet<_> = routes()
            .into_iter()
            .map(|(m, p, guarded, _)| (m.to_string(), p.to_owned(), guarded))
            .collect();
        assert_eq!(
            documented, served,
            "docs/openapi.json and the routes differ"
        );
        assert_eq!(doc["security"][0]["bearer"], json!([]));
    }

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
