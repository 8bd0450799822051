//! REST front end: one `router()` per resource, merged here with the token
//! check for `/api/*` and the static web client as the fallback.

mod error;
mod health;
mod rooms;
mod stats;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::services::ServeDir;

pub use error::{ApiError, AppJson};

use crate::app::AppState;

/// Every HTTP route of the node, WebSocket included.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .merge(rooms::router())
        .merge(users::router())
        .merge(stats::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let web = ServeDir::new(&state.static_dir).not_found_service(not_found.into_service());
    Router::new()
        .merge(health::router())
        .merge(crate::ws::router())
        .merge(api)
        .fallback_service(web)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
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
