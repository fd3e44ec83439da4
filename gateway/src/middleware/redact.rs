//! Credential redaction, before anything is traced or logged.
//!
//! `?access_token=<key>` is moved out of the URI into a request extension
//! ([`QueryCredential`]) for the auth layer, and the URI keeps
//! `access_token=REDACTED`, so the key cannot reach a span, a log line or an
//! error. Parameters are matched by their *decoded* name, whatever its case,
//! and split on `;` as well as `&`: `?ACCESS_TOKEN=`, `?access%5Ftoken=` and
//! `;access_token=` are redacted too (only the exact decoded name
//! `access_token` is taken as a credential; the others get 401). Any other
//! parameter whose value is a configured caller key (by its SHA-256) is
//! redacted as well. Likewise the vendor callback token in
//! `/callbacks/{provider}/{token}` moves into [`PathCredential`] and the path
//! reads `.../REDACTED`. The `Authorization` header is marked sensitive by
//! tower-http's `SetSensitiveRequestHeadersLayer` where the stack is assembled.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use gateway_config::Secret;
use sha2::{Digest, Sha256};
use url::form_urlencoded;

/// The key given as `?access_token=`, taken out of the URI.
#[derive(Clone)]
pub struct QueryCredential(pub Secret<String>);

/// The token of a vendor callback path, taken out of the URI.
#[derive(Clone)]
pub struct PathCredential(pub Secret<String>);

/// SHA-256 of every caller key configured since the process started (a key a
/// reload removed is still redacted): a query value equal to one is redacted.
/// Clones share one set.
#[derive(Clone, Default)]
pub struct KnownKeys(Arc<ArcSwap<HashSet<[u8; 32]>>>);

impl KnownKeys {
    pub fn new(hashes: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(hashes.into_iter().collect())))
    }

    /// Adds the keys of a reloaded configuration (one reload at a time).
    pub fn add(&self, hashes: impl IntoIterator<Item = [u8; 32]>) {
        let mut all = HashSet::clone(&self.0.load());
        all.extend(hashes);
        self.0.store(Arc::new(all));
    }

    fn contains(&self, value: &str) -> bool {
        // Shorter values are no key (check-config wants keys of 16 characters and more).
        if value.len() < MIN_KEY_LEN {
            return false;
        }
        let known = self.0.load();
        !known.is_empty() && known.contains(&<[u8; 32]>::from(Sha256::digest(value)))
    }
}

const PARAM: &str = "access_token";
const CALLBACKS: &str = "/callbacks/";
const REDACTED: &str = "REDACTED";
const MIN_KEY_LEN: usize = 16;

/// Moves `access_token` from the query into [`QueryCredential`] (redacting
/// every spelling of it and every known key), and a callback path's token into
/// [`PathCredential`].
pub async fn redact_query_credentials(State(keys): State<KnownKeys>, mut req: Request, next: Next) -> Response {
    if let Some((credential, uri)) = req.uri().query().and_then(|q| split(req.uri(), q, &keys)) {
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

/// The first `access_token` value and the URI with every spelling of it, and
/// every value that is a known key, redacted; `None` if nothing needs it.
/// Other parameters keep their bytes as sent.
fn split(uri: &Uri, query: &str, keys: &KnownKeys) -> Option<(Option<String>, Uri)> {
    let mut credential = None;
    let mut redacted = String::with_capacity(query.len());
    let mut changed = false;
    let mut rest = query;
    // Only `&` separates form parameters: after a `;` the name is redacted but not taken.
    let mut after_semicolon = false;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let (segment, tail) = rest.split_at(end);
        let (raw_name, _) = segment.split_once('=').unwrap_or((segment, ""));
        let (name, value) = form_urlencoded::parse(segment.as_bytes()).next().unwrap_or_default();
        if name.trim().eq_ignore_ascii_case(PARAM) {
            if name == PARAM && !after_semicolon && credential.is_none() {
                credential = Some(value.into_owned());
            }
            changed = true;
            redacted.push_str(raw_name);
            redacted.push('=');
            redacted.push_str(REDACTED);
        } else if keys.contains(&value) {
            changed = true;
            redacted.push_str(raw_name);
            redacted.push('=');
            redacted.push_str(REDACTED);
        } else {
            redacted.push_str(segment);
        }
        let Some(separator) = tail.chars().next() else { break };
        redacted.push(separator);
        after_semicolon = separator == ';';
        rest = &tail[1..];
    }
    if !changed {
        return None;
    }
    let path_and_query = format!("{}?{redacted}", uri.path());
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
        let (credential, redacted) = split(&uri, uri.query().unwrap(), &KnownKeys::default()).unwrap();
        assert_eq!(credential.as_deref(), Some("s/ecret"));
        assert_eq!(redacted.to_string(), "/v1/summaries/sum_1?wait=5&access_token=REDACTED&x=1");
        let untouched: Uri = "/v1/questions?provider=a%20b&conversation_id=c".parse().unwrap();
        assert!(split(&untouched, untouched.query().unwrap(), &KnownKeys::default()).is_none());
    }

    #[test]
    fn redacts_every_spelling_of_the_parameter_but_takes_only_the_canonical_one() {
        let keys = KnownKeys::default();
        for (query, expected, taken) in [
            ("access%5Ftoken=k1", "access%5Ftoken=REDACTED", Some("k1")),
            ("ACCESS_TOKEN=k2&a=1", "ACCESS_TOKEN=REDACTED&a=1", None),
            ("a=1;access_token=k3", "a=1;REDACTED", None),
            ("Access%5fToken=k4;b=%41", "Access%5fToken=REDACTED;b=%41", None),
            ("access_token", "access_token=REDACTED", Some("")),
        ] {
            let uri: Uri = format!("/v1/providers?{query}").parse().unwrap();
            let (credential, redacted) = split(&uri, uri.query().unwrap(), &keys).unwrap();
            let expected = expected.replace("a=1;REDACTED", "a=1;access_token=REDACTED");
            assert_eq!(redacted.query(), Some(expected.as_str()), "{query}");
            assert_eq!(credential.as_deref(), taken, "{query}");
        }
    }

    #[test]
    fn redacts_a_known_key_under_any_name() {
        let key = "crm-test-key-0123456789";
        let keys = KnownKeys::new([<[u8; 32]>::from(Sha256::digest(key))]);
        let uri: Uri = format!("/v1/providers?token={key}&key=crm-test-key-0123456780").parse().unwrap();
        let (credential, redacted) = split(&uri, uri.query().unwrap(), &keys).unwrap();
        assert_eq!(credential, None);
        assert_eq!(redacted.query(), Some("token=REDACTED&key=crm-test-key-0123456780"));
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
