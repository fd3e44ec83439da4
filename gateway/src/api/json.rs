//! The JSON body extractor: 415 for a body that is not JSON, 413 past the body
//! limit, 400 with the offending field's path for JSON that does not fit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, RequestError};

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
            return Err(ApiError::from(RequestError::UnsupportedMediaType).into_response());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                // A bare 413: the edge, which knows the limit, writes the problem.
                StatusCode::PAYLOAD_TOO_LARGE.into_response()
            } else {
                ApiError::from(RequestError::Invalid(format!("could not read the body: {rejection}"))).into_response()
            }
        })?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Self(value)),
            // Only a body that fails is parsed again, tracking the path, to explain why.
            Err(_) => Err(ApiError::from(RequestError::Invalid(explain::<T>(&bytes))).into_response()),
        }
    }
}

/// Why `bytes` is not a `T`, naming the offending field.
fn explain<T: DeserializeOwned>(bytes: &[u8]) -> String {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => match de.end() {
            Ok(()) => "the body is not a valid request".to_owned(),
            Err(e) => format!("malformed JSON: {e}"),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {inner}")
            } else if path.is_empty() || path == "." {
                format!("invalid body: {inner}")
            } else {
                format!("{path}: {inner}")
            }
        }
    }
}

/// `application/json` or any `application/*+json`, parameters allowed.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn recognises_json_media_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}
