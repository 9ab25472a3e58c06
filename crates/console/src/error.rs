//! The API's errors: `{"error": message}` with a status, `503` with
//! `Retry-After`; and the pid syntax every route accepts.

use ember_runtime::Pid;
use ember_web::Response;
use http::StatusCode;
use serde_json::json;

/// Why a request failed: answered as `{"error": message}` with the status.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl ApiError {
    pub(crate) fn into_response(self) -> Response {
        let response = with_status(self.0, ember_web::json(&json!({ "error": self.1 })));
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            retry_later(response)
        } else {
            response
        }
    }
}

/// A JSON error: `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

/// The response of [`error`].
pub(crate) fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    error(status, message).into_response()
}

/// Adds `Retry-After: 1`.
pub(crate) fn retry_later(mut response: Response) -> Response {
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

/// `response` with `status`.
pub(crate) fn with_status(status: StatusCode, mut response: Response) -> Response {
    *response.status_mut() = status;
    response
}

/// Parses `0.123.0`, `<0.123.0>` or its URL-encoded form.
pub(crate) fn parse_pid(text: &str) -> Option<Pid> {
    let decoded = text.trim().replace("%3C", "<").replace("%3c", "<");
    let decoded = decoded.replace("%3E", ">").replace("%3e", ">");
    decoded.parse().ok()
}
