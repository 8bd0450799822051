//! `GET /api/stats`: this node's connections and cluster-wide counts.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use super::AppJson;
use crate::api_error::ApiError;
use crate::domain::NodeId;
use crate::state::AppState;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/api/stats", get(stats))
}

#[derive(Serialize)]
struct Stats {
    node: NodeId,
    connections: usize,
    users_online: usize,
    rooms_active: usize,
    nodes: Vec<NodeId>,
}

async fn stats(State(state): State<Arc<AppState>>) -> Result<AppJson<Stats>, ApiError> {
    let cluster = state.chat.stats().await?;
    Ok(AppJson(Stats {
        node: state.chat.node().clone(),
        connections: state.open_connections(),
        users_online: cluster.users_online,
        rooms_active: cluster.rooms_active,
        nodes: cluster.nodes,
    }))
}
