//! REST front end: one `router()` per resource, merged here with the origin
//! and token checks and the `POST` rate limit for `/api/*`, and the static
//! web client as the fallback.

mod error;
mod health;
mod limit;
mod rooms;
mod stats;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::Method;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::services::ServeDir;

pub use error::{ApiError, AppJson};
pub(crate) use limit::PostLimiter;

use crate::app::AppState;

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
    let web = ServeDir::new(&state.static_dir)
        .call_fallback_on_method_not_allowed(true)
        .fallback(not_found.into_service());
    let mut router = Router::new()
        .merge(health::router())
        .merge(crate::ws::router())
        .merge(api);
    if with_metrics {
        router = router.merge(health::metrics_router());
    }
    router = router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback_service(web)
        .layer(DefaultBodyLimit::max(error::MAX_BODY_BYTES));
    // Outermost, so that preflights get their CORS answer before routing
    // (which knows no OPTIONS) and the origin check.
    if let Some(cors) = state.origins.cors() {
        router = router.layer(cors);
    }
    router.with_state(state)
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
