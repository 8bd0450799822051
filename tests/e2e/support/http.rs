//! One HTTP request with a bounded wait, and what it answered.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::TIMEOUT;

/// What a request answered: status, headers and the JSON body (`Null` when
/// the body is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The header `name`, if it is there, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header"))
    }

    /// `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<&str> {
        self.header(RETRY_AFTER.as_str())
    }
}

/// `method url` with an optional JSON body and extra `headers`, answered
/// within [`TIMEOUT`].
pub async fn call(
    method: Method,
    url: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("an answer in time")
        .expect("an answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}
