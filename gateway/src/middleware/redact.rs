//! Credential redaction, before anything is traced or logged.
//!
//! `?access_token=<key>` is moved out of the URI into a request extension
//! ([`QueryCredential`]) for the auth layer, and the URI keeps
//! `access_token=REDACTED`, so the key cannot reach a span, a log line or an
//! error. The `Authorization` header is marked sensitive by tower-http's
//! `SetSensitiveRequestHeadersLayer` where the stack is assembled.

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use gateway_config::Secret;
use url::form_urlencoded;

/// The key given as `?access_token=`, taken out of the URI.
#[derive(Clone)]
pub struct QueryCredential(pub Secret<String>);

const PARAM: &str = "access_token";

/// Moves `access_token` from the query into [`QueryCredential`].
pub async fn redact_query_credentials(mut req: Request, next: Next) -> Response {
    if let Some((credential, uri)) = req.uri().query().filter(|q| q.contains(PARAM)).and_then(|q| split(req.uri(), q)) {
        *req.uri_mut() = uri;
        if let Some(credential) = credential {
            req.extensions_mut().insert(QueryCredential(Secret::new(credential)));
        }
    }
    next.run(req).await
}

/// The first `access_token` value and the URI with every one of them redacted.
fn split(uri: &Uri, query: &str) -> Option<(Option<String>, Uri)> {
    let mut credential = None;
    let mut redacted = form_urlencoded::Serializer::new(String::with_capacity(query.len()));
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == PARAM {
            if credential.is_none() {
                credential = Some(value.into_owned());
            }
            redacted.append_pair(PARAM, "REDACTED");
        } else {
            redacted.append_pair(&key, &value);
        }
    }
    let path_and_query = format!("{}?{}", uri.path(), redacted.finish());
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Some((credential, Uri::from_parts(parts).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_key_out_of_the_uri() {
        let uri: Uri = "/v1/summaries/sum_1?wait=5&access_token=s%2Fecret&x=1".parse().unwrap();
        let (credential, redacted) = split(&uri, uri.query().unwrap()).unwrap();
        assert_eq!(credential.as_deref(), Some("s/ecret"));
        assert_eq!(redacted.to_string(), "/v1/summaries/sum_1?wait=5&access_token=REDACTED&x=1");
    }
}
