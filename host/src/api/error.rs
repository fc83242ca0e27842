//! API errors, always `{"error": code, "message": text}` with the status the
//! README documents, and the JSON body extractor that produces the 400s and
//! 413s.

use crate::types::{CallError, ChildError, StartError};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// A 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// A 404 `not_found` for child `id`.
    pub fn not_found(id: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no child with id {id:?}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read, so the connection cannot
            // carry another request; say so, or a client reuses it and fails.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// The message of an error whose `Display` starts with its code, without
/// that prefix (the code travels in its own field).
fn detail(code: &str, text: String) -> String {
    match text.strip_prefix(code).and_then(|t| t.strip_prefix(": ")) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        let status = match e {
            CallError::NotFound => StatusCode::NOT_FOUND,
            CallError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            CallError::Trapped(_) | CallError::Killed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CallError::MailboxFull => StatusCode::TOO_MANY_REQUESTS,
            CallError::InitFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::Failed(_) | CallError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            status,
            code: e.code(),
            message: detail(e.code(), e.to_string()),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> ApiError {
        let status = match e {
            StartError::AlreadyStarted(_) => StatusCode::CONFLICT,
            StartError::UnknownPlugin(_) | StartError::InitFailed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            StartError::Invalid(_) => StatusCode::BAD_REQUEST,
            StartError::Unavailable(_) | StartError::MaxChildren(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError {
            status,
            code: e.code(),
            message: detail(e.code(), e.to_string()),
        }
    }
}

impl From<ChildError> for ApiError {
    fn from(e: ChildError) -> ApiError {
        match e {
            ChildError::NotFound(id) => ApiError::not_found(&id),
            ChildError::CannotHibernate(why) => ApiError {
                status: StatusCode::CONFLICT,
                code: "cannot_hibernate",
                message: why,
            },
            ChildError::Unavailable(why) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: why,
            },
        }
    }
}

/// A JSON request body. Unlike `axum::Json` it ignores the content type (so
/// `curl -d` works), and its failures are API errors: malformed JSON or a
/// wrong field is a 400, a body over the limit a 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError {
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        code: "payload_too_large",
                        message: "the request body is larger than the limit".into(),
                    }
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {rejection}"))
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}
