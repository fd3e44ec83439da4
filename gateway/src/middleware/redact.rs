//! Credential redaction, before anything is traced or logged.
//!
//! `?access_token=<key>` is moved out of the URI into a request extension
//! ([`QueryCredential`]) for the auth layer, and the URI keeps
//! `access_token=REDACTED`, so the key cannot reach a span, a log line or an
//! error. Likewise the vendor callback token in `/callbacks/{provider}/{token}`
//! moves into [`PathCredential`] and the path reads `.../REDACTED`. The
//! `Authorization` header is marked sensitive by tower-http's
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

/// The token of a vendor callback path, taken out of the URI.
#[derive(Clone)]
pub struct PathCredential(pub Secret<String>);

const PARAM: &str = "access_token";
const CALLBACKS: &str = "/callbacks/";
const REDACTED: &str = "REDACTED";

/// Moves `access_token` from the query into [`QueryCredential`], and a callback
/// path's token into [`PathCredential`].
pub async fn redact_query_credentials(mut req: Request, next: Next) -> Response {
    if let Some((credential, uri)) = req.uri().query().filter(|q| q.contains(PARAM)).and_then(|q| split(req.uri(), q)) {
        *req.uri_mut() = uri;
        if let Some(credential) = credential {
            req.extensions_mut().insert(QueryCredential(Secret::new(credential)));
        }
    }
    if req.uri().path().starts_with(CALLBACKS)
        && let Some((token, uri)) = split_callback(req.uri())
    {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(PathCredential(Secret::new(token)));
    }
    next.run(req).await
}

/// `/callbacks/{provider}/{token}...` → the token and the URI with `REDACTED` in its place.
fn split_callback(uri: &Uri) -> Option<(String, Uri)> {
    let rest = uri.path().strip_prefix(CALLBACKS)?;
    let (provider, after) = rest.split_once('/')?;
    let (token, tail) = after.split_once('/').map_or((after, ""), |(t, tail)| (t, tail));
    if token.is_empty() || token == REDACTED {
        return None;
    }
    let mut path_and_query = format!("{CALLBACKS}{provider}/{REDACTED}");
    if !tail.is_empty() {
        path_and_query.push('/');
        path_and_query.push_str(tail);
    }
    if let Some(q) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    let token = percent_decode(token);
    Some((token, Uri::from_parts(parts).ok()?))
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("t={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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

    #[test]
    fn takes_the_callback_token_out_of_the_path() {
        let uri: Uri = "/callbacks/cb/tok-123_abc?id=sum_1".parse().unwrap();
        let (token, redacted) = split_callback(&uri).unwrap();
        assert_eq!(token, "tok-123_abc");
        assert_eq!(redacted.to_string(), "/callbacks/cb/REDACTED?id=sum_1");
        assert!(split_callback(&"/callbacks/cb".parse().unwrap()).is_none());
        assert!(split_callback(&"/callbacks/cb/REDACTED".parse().unwrap()).is_none());
    }
}
