//! Uploads over HTTP: `POST /api/uploads` (announce one, get where to PUT
//! it), `GET /api/uploads/{id}` (the file, or a redirect to it), and the
//! local folder's `PUT /api/uploads/{id}/content?k=SECRET`, which streams
//! its body to disk and so is mounted apart from the read-whole-body limit
//! and the token check (the one-time secret stands in for the token).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::AppJson;
use super::messages::sender;
use crate::api_error::ApiError;
use crate::auth::Identity;
use crate::chat::Put;
use crate::state::AppState;
use crate::uploads::Fetched;

/// The routes under the API's checks (origin, token, `POST` rate).
pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/uploads", post(create))
        .route("/api/uploads/{id}", get(fetch))
}

/// The local PUT, without the token check or the body limit.
pub(super) fn content_router() -> Router<Arc<AppState>> {
    Router::new().route("/api/uploads/{id}/content", put(receive))
}

#[derive(Deserialize)]
struct NewUpload {
    /// The uploader in anonymous mode; with auth, the token's `sub`.
    user: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    media_type: String,
    size: Option<u64>,
}

#[derive(Serialize)]
struct Created {
    id: String,
    upload_url: String,
    method: &'static str,
    headers: serde_json::Map<String, serde_json::Value>,
    expires_at: String,
}

async fn create(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<Identity>>,
    AppJson(body): AppJson<NewUpload>,
) -> Result<Response, ApiError> {
    let uploader = sender(identity, [body.user])?;
    let offer = state
        .chat
        .create_upload(uploader, &body.name, &body.media_type, body.size)
        .await?;
    let expires_at: chrono::DateTime<chrono::Utc> = offer.target.expires_at.into();
    let created = Created {
        id: offer.id.to_string(),
        upload_url: offer.target.url,
        method: "PUT",
        headers: offer
            .target
            .headers
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect(),
        expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Headers every served upload carries, whatever its type: the browser
/// must neither guess the type nor run anything in it, and no other site
/// may embed it.
fn harden(headers: &mut HeaderMap) {
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// The id in the path; one that does not even decode is as unknown as any.
fn upload_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|_| ApiError::NotFound)
}

async fn fetch(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<Identity>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = upload_id(path)?;
    let viewer = identity.as_ref().map(|Extension(i)| &i.user);
    let download = state.chat.download(&id, viewer).await?;
    // Both come from validated records (a name without controls, a type
    // of token characters), so they are always valid header values.
    let content_type =
        HeaderValue::from_str(&download.content_type).map_err(|_| ApiError::NotFound)?;
    let disposition =
        HeaderValue::from_str(&download.disposition).map_err(|_| ApiError::NotFound)?;
    let mut response = match download.fetched {
        Fetched::Redirect(url) => {
            let location = HeaderValue::from_str(&url).map_err(|_| ApiError::Unavailable)?;
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(LOCATION, location);
            // The URL expires in minutes: never reuse a cached redirect.
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            response
        }
        Fetched::File(path) => {
            // ServeFile answers Range and conditional requests.
            let Ok(response) = ServeFile::new(path).oneshot(request).await;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(ApiError::NotFound);
            }
            let mut response = response.map(Body::new);
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, content_type);
            headers.insert(CONTENT_DISPOSITION, disposition);
            headers.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=86400, immutable"),
            );
            response
        }
    };
    harden(response.headers_mut());
    Ok(response)
}

/// The `k` of a query string. Secrets are hex, so nothing needs decoding,
/// and a query that is not one simply has no secret.
fn secret(query: Option<&str>) -> &str {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("k="))
        .unwrap_or_default()
}

async fn receive(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = match upload_id(path) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let put = Put {
        id: &id,
        secret: secret(query.as_deref()),
        content_type: text(CONTENT_TYPE),
        content_length: text(CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        body: body.into_data_stream(),
        idle: state.handshake_timeout,
    };
    match state.chat.put_local(put).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => {
            // The rest of the body is not read, so the connection cannot
            // carry another request.
            let mut response = ApiError::from(failure).into_response();
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_the_k_of_the_query_and_nothing_else() {
        assert_eq!(secret(Some("k=abc")), "abc");
        assert_eq!(secret(Some("x=1&k=abc")), "abc");
        assert_eq!(secret(Some("kk=abc")), "");
        assert_eq!(secret(Some("%ZZ")), "");
        assert_eq!(secret(None), "");
    }
}
