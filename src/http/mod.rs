//! REST front end: one `router()` per resource, merged here with the origin
//! and token checks and the `POST` rate limit for `/api/*`, the deadline on
//! request bodies, and the web client (built into the binary, or a folder's
//! when CHORUS_STATIC_DIR is set).

mod health;
mod json;
mod limit;
mod rooms;
mod stats;
mod users;

use std::sync::Arc;

use std::error::Error as _;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::header::{AUTHORIZATION, CONNECTION, HOST, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use memory_serve::CacheControl;
use tower_http::services::ServeDir;

pub use json::AppJson;
pub(crate) use limit::PostLimiter;

use crate::api_error::ApiError;
use crate::app::AppState;
use crate::protocol::MAX_BODY_BYTES;
use crate::telemetry;

/// Every HTTP route of the node, WebSocket included, and `/metrics` unless
/// it has a listener of its own.
pub(crate) fn router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let api = Router::new()
        .merge(rooms::router())
        .merge(users::router())
        .merge(stats::router())
        // Innermost: route layers run last-added first, and the limit
        // needs the identity the token check finds.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit::limit_posts,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(state.clone(), check_origin));
    let mut router = Router::new()
        .merge(health::router())
        .merge(crate::ws::router())
        .merge(api);
    if with_metrics {
        router = router.merge(health::metrics_router());
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
    router =
        router
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                read_body_in_time,
            ));
    // Outermost, so that preflights get their CORS answer before routing
    // (which knows no OPTIONS) and the origin check.
    if let Some(cors) = state.origins.cors() {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// The web client embedded at build time. Every file carries an ETag
/// (`If-None-Match` answers 304) and `Cache-Control: no-cache`: the files
/// have no content hash in their names, so a browser must revalidate them
/// to pick up a new release at once, which costs one 304 per file.
fn embedded_web_client() -> Router<Arc<AppState>> {
    memory_serve::load!()
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

/// `/metrics` alone, for CHORUS_METRICS_ADDR.
pub(crate) fn metrics_router(state: Arc<AppState>) -> Router {
    health::metrics_router().with_state(state)
}

/// A browser page from an origin that is not allowed gets 403 before the
/// request does anything.
async fn check_origin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if !state.origins.allows(headers.get(ORIGIN), headers.get(HOST)) {
        return Err(ApiError::ForbiddenOrigin);
    }
    Ok(next.run(request).await)
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

/// With auth on, `/api/*` needs `Authorization: Bearer <JWT>`; the identity
/// is passed on to handlers as a request extension.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(auth) = &state.auth {
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let identity = auth.verify(token)?;
        request.extensions_mut().insert(identity);
    }
    Ok(next.run(request).await)
}
