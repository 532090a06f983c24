//! Errors at the HTTP boundary: one mapping of gRPC codes to HTTP ones, and
//! the error as JSON (`{code, message}`, for the API) or as a page.

use axum::{
    Json,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde_json::json;
use tonic::{Code, Status};

use crate::error::PeerError;

/// The HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The code's name as the gRPC spec writes it: `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An API error: `{code, message}` with the code's HTTP status.
#[derive(Debug)]
pub struct ApiError(pub Status);

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(Status::invalid_argument(message.into()))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.0.code()), self.0.message())
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        Self(s)
    }
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let body = json!({ "code": code_name(code), "message": self.0.message() });
        (http_status(code), Json(body)).into_response()
    }
}

/// A page's error: the same status, as a short page with a way back.
#[derive(Debug)]
pub struct PageError(pub Status);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self(e.into().0)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let page = super::pages::error_page(code_name(code), self.0.message());
        (http_status(code), Html(page)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping the API promises (docs/WEB.md).
    #[test]
    fn grpc_codes_map_to_http_codes() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 409),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::PermissionDenied, 403),
            (Code::Unauthenticated, 401),
            (Code::Unavailable, 503),
            (Code::Internal, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[tokio::test]
    async fn an_api_error_is_its_code_and_message_as_json() {
        let r = ApiError::from(PeerError::NotFound("no transfer of \"x\"".into())).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "NOT_FOUND");
        assert_eq!(v["message"], "no transfer of \"x\"");
    }
}
