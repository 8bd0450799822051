//! The node's one router: the WebSocket route and the REST routes side by
//! side, the web client behind them (built into the binary, or a folder's
//! when CHORUS_STATIC_DIR is set), and what every request passes first: the
//! deadline and size limit on its body, and CORS. Mounting both front ends
//! here, above them, is what lets neither know the other.

use std::error::Error as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::header::{CONNECTION, CONTENT_SECURITY_POLICY, X_FRAME_OPTIONS};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http_body_util::LengthLimitError;
use memory_serve::CacheControl;
use tower_http::services::ServeDir;

use crate::api_error::ApiError;
use crate::protocol::MAX_BODY_BYTES;
use crate::state::AppState;
use crate::{http, telemetry, ws};

/// Every route of the node: WebSocket, REST, and `/metrics` unless it has a
/// listener of its own.
pub(crate) fn router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let mut router = Router::new()
        .merge(ws::router())
        .merge(http::router(&state, with_metrics));
    // Only with a token, like the admin API: unset, `/admin` is an unknown
    // path (the page holds no secret, but its presence tells there is an
    // admin surface to guess at).
    if state.admin_token.is_some() {
        router = router
            .nest("/admin", embedded_console())
            .route("/admin/", get(|| async { Redirect::permanent("/admin") }));
    }
    router = match &state.static_dir {
        // The operator's folder, read at request time.
        Some(dir) => router
            .method_not_allowed_fallback(method_not_allowed)
            .fallback_service(
                ServeDir::new(dir)
                    .call_fallback_on_method_not_allowed(true)
                    .fallback(not_found.into_service()),
            ),
        // The copy built into the binary (build.rs): one GET route per file,
        // merged before the 405 fallback is set so that it covers them too.
        None => router
            .merge(embedded_web_client())
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(not_found),
    };
    router = router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        // After the body layers, so they do not wrap it: an upload's body
        // is streamed to disk under deadlines of its own.
        .merge(http::upload_content_router(&state));
    // Outermost, so that preflights get their CORS answer before routing
    // (which knows no OPTIONS) and the origin check.
    if let Some(cors) = state.origins.cors() {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// The web client embedded at build time (`static/`, build.rs).
fn embedded_web_client() -> Router<Arc<AppState>> {
    embedded(memory_serve::load!("web"))
}

/// The admin console (`console/`, build.rs) under `/admin`: the page at
/// `/admin` itself, its script and stylesheet beside it. It borrows the web
/// client's `/style.css` for the look both share.
fn embedded_console() -> Router<Arc<AppState>> {
    embedded(memory_serve::load!("console")).layer(middleware::map_response(console_headers))
}

/// The console page holds the admin token: only its own origin's files may
/// run in it or be fetched by it, and no other page may frame it (a click
/// on a hidden "Disconnect" would be an administrator's).
const CONSOLE_CSP: &str = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn console_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Files embedded at build time, `index.html` answering for the folder.
/// Every file carries an ETag (`If-None-Match` answers 304) and
/// `Cache-Control: no-cache`: the files have no content hash in their names,
/// so a browser must revalidate them to pick up a new release at once, which
/// costs one 304 per file.
fn embedded(files: memory_serve::MemoryServe) -> Router<Arc<AppState>> {
    files
        .index_file(Some("/index.html"))
        .html_cache_control(CacheControl::NoCache)
        .cache_control(CacheControl::NoCache)
        .into_router()
}

/// Reads a request's whole body, at most [`MAX_BODY_BYTES`], within
/// the handshake timeout, before any handler sees it. hyper only times the
/// head; without this a client announcing a body it never sends (or drips a
/// byte at a time, which would defeat a per-read timer) holds its socket
/// for good. Late: 408 and `Connection: close`, so hyper closes the socket.
async fn read_body_in_time(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    use axum::body::HttpBody;
    let hint = request.body().size_hint();
    // Nothing to wait for: GETs, WebSocket upgrades.
    if hint.exact() == Some(0) {
        return next.run(request).await;
    }
    // An announced length over the limit is refused without reading it.
    if usize::try_from(hint.lower()).map_or(true, |n| n > MAX_BODY_BYTES) {
        return closing(ApiError::BodyTooLarge);
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    match tokio::time::timeout(state.handshake_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if e.source().is_some_and(|s| s.is::<LengthLimitError>()) => {
            closing(ApiError::BodyTooLarge)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request body broke off");
            closing(ApiError::BadRequest(
                "the request body broke off".to_owned(),
            ))
        }
        Err(_) => {
            metrics::counter!(telemetry::HANDSHAKE_TIMEOUTS).increment(1);
            closing(ApiError::RequestTimeout)
        }
    }
}

/// `error`'s response with `Connection: close`: the rest of the body, if
/// any, is not read, so the connection cannot carry another request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// What the static files do not have: 404, or 405 for a method other than
/// GET or HEAD, in the JSON error shape either way.
async fn not_found(method: Method) -> ApiError {
    if method == Method::GET || method == Method::HEAD {
        ApiError::NotFound
    } else {
        ApiError::MethodNotAllowed
    }
}
