//! REST front end: one `router()` per resource, merged here with the origin
//! and token checks and the `POST` rate limit for `/api/*`, beside health
//! (and `/metrics`). `routes` mounts it beside the WebSocket route.

mod admin;
mod health;
mod json;
mod limit;
mod messages;
mod rooms;
mod stats;
mod uploads;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::middleware::{self, Next};
use axum::response::Response;

pub use json::AppJson;

use crate::api_error::ApiError;
use crate::state::AppState;

/// Every REST route, and `/metrics` unless it has a listener of its own.
pub(crate) fn router(state: &Arc<AppState>, with_metrics: bool) -> Router<Arc<AppState>> {
    let api = Router::new()
        .merge(rooms::router())
        .merge(messages::router())
        .merge(users::router())
        .merge(stats::router())
        .merge(uploads::router())
        // Innermost: route layers run last-added first, and the limit
        // needs the identity the token check finds.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit::limit_posts,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(state.clone(), check_origin));
    let mut router = Router::new().merge(health::router()).merge(api);
    // Only with a token: unset, the admin routes do not exist at all and
    // every `/api/admin/*` path answers 404, whatever the method (an
    // unknown path answers 405 to a POST, which would tell them apart).
    if state.admin_token.is_some() {
        router = router.merge(
            admin::router()
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    admin::authenticate,
                ))
                .route_layer(middleware::from_fn_with_state(state.clone(), check_origin)),
        );
    } else {
        router = router.merge(admin::absent_router());
    }
    if with_metrics {
        router.merge(health::metrics_router())
    } else {
        router
    }
}

/// The local folder's upload PUT: streamed, so `routes` mounts it outside
/// the read-whole-body limit; no token (its one-time secret replaces it),
/// but the origin check all the same.
pub(crate) fn upload_content_router(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    uploads::content_router()
        .route_layer(middleware::from_fn_with_state(state.clone(), check_origin))
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
