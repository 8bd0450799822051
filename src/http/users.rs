//! `GET /api/users`: online users, cluster-wide.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::AppJson;
use crate::api_error::ApiError;
use crate::domain::UserName;
use crate::state::AppState;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/api/users", get(online))
}

async fn online(State(state): State<Arc<AppState>>) -> Result<AppJson<Vec<UserName>>, ApiError> {
    Ok(AppJson(state.chat.online().await?))
}
