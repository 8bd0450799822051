//! Liveness, readiness and the Prometheus scrape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;
use crate::telemetry;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        // The seed servers' name for the same probe.
        .route("/healthz", get(health))
        .route("/ready", get(ready))
}

/// `/metrics`, on the main port or on CHORUS_METRICS_ADDR.
pub(super) fn metrics_router() -> Router<Arc<AppState>> {
    Router::new().route("/metrics", get(metrics))
}

async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(json!({"status": "ok", "node": state.chat.node()}))
}

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let node = state.chat.node();
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "node": node})),
        );
    }
    match state.chat.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "node": node})),
        ),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "node": node})),
            )
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // Read here rather than kept current: the count changes on every
    // delivered frame, and only a scrape needs it.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a gauge of bytes needs no precision past 2^53"
    )]
    let buffered = state.chat.buffered_bytes() as f64;
    metrics::gauge!(telemetry::OUTBOUND_BUFFERED_BYTES).set(buffered);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
}
