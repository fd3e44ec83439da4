//! The auth layer alone, in front of a `tower_test` mock: what reaches the
//! inner service (and with which [`Caller`]) and what is answered without it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use serde_json::json;
use tower::ServiceExt;
use tower_test::mock;

use super::*;
use crate::error::Problem;

const CRM_KEY: &str = "crm-key-0123456789abcdef";
const PBX_ONLY_KEY: &str = "pbx-key-0123456789abcdef";
/// `rotating`'s keys: the old one expired a second ago, the new one ends in a day.
const OLD_KEY: &str = "old-key-0123456789abcdef";
const NEW_KEY: &str = "new-key-0123456789abcdef";

fn credential(secret: &str, not_after: Option<jiff::Timestamp>) -> Credential {
    Credential { sha256: Sha256::digest(secret.as_bytes()).into(), not_after }
}

/// Three callers: `crm` may use every provider, `pbx-only` only `pbx`, and
/// `rotating` has two keys, one expired.
fn keys() -> Arc<Keys> {
    let key = |credentials: Vec<Credential>, providers: Option<&[&str]>| {
        let mut key: gateway_config::KeyConfig =
            serde_json::from_value(json!({ "key_sha256": "00".repeat(32), "providers": providers })).unwrap();
        key.credentials = credentials;
        key
    };
    let now = jiff::Timestamp::now();
    let rotating = vec![
        credential(OLD_KEY, Some(now - jiff::SignedDuration::from_secs(1))),
        credential(NEW_KEY, Some(now + jiff::SignedDuration::from_hours(24))),
    ];
    let keys = BTreeMap::from([
        ("crm".to_owned(), key(vec![credential(CRM_KEY, None)], None)),
        ("pbx-only".to_owned(), key(vec![credential(PBX_ONLY_KEY, None)], Some(&["pbx"]))),
        ("rotating".to_owned(), key(rotating, None)),
    ]);
    Arc::new(Keys::from_config(&AuthConfig { keys }))
}

fn request(authorization: Option<&str>) -> Request {
    let mut req = Request::builder().uri("/v1/summaries").body(Body::empty()).unwrap();
    if let Some(value) = authorization {
        req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    }
    req
}

/// Sends `req` through the layer: the response, and the request as the inner
/// service got it (`None`: the layer answered without calling it).
async fn through(req: Request) -> (Response, Option<Request>) {
    let (mut service, mut inner) = mock::spawn_layer::<Request, Response, _>(AuthLayer::new(keys()));
    inner.allow(1);
    assert!(service.poll_ready().is_ready(), "ready when the inner service is");
    let response = service.call(req);
    // The mock queues a request in `call` itself, so this is decided by now.
    let seen = match inner.poll_request() {
        Poll::Ready(Some((seen, answer))) => {
            answer.send_response(StatusCode::NO_CONTENT.into_response());
            Some(seen)
        }
        _ => None,
    };
    (response.await.expect("the layer never fails"), seen)
}

fn caller_of(seen: &Request) -> &Caller {
    seen.extensions().get::<Arc<Caller>>().expect("auth puts the caller into the extensions")
}

fn problem_code(response: &Response) -> &str {
    &response.extensions().get::<Arc<Problem>>().expect("a problem for problem_json to write").code
}

#[tokio::test]
async fn a_bearer_key_reaches_the_inner_service_with_its_caller() {
    let (response, seen) = through(request(Some(&format!("Bearer {CRM_KEY}")))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "the inner service's answer");
    assert_eq!(&*caller_of(&seen.expect("passed on")).name, "crm");
}

#[tokio::test]
async fn a_caller_with_two_keys_is_refused_on_the_expired_one_and_served_on_the_other() {
    let (response, seen) = through(request(Some(&format!("Bearer {NEW_KEY}")))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(&*caller_of(&seen.expect("passed on")).name, "rotating");

    let (response, seen) = through(request(Some(&format!("Bearer {OLD_KEY}")))).await;
    assert!(seen.is_none(), "an expired key goes no further");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(&response), "unauthorized");
    let problem = response.extensions().get::<Arc<Problem>>().unwrap();
    assert!(problem.detail.contains("expired"), "{}", problem.detail);
    assert!(!problem.detail.contains(OLD_KEY) && !problem.detail.contains("rotating"), "{}", problem.detail);
    let challenge = response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains(r#"error="invalid_token""#) && challenge.contains("expired"), "{challenge}");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_blanks_around_the_key_are_ignored() {
    for value in [format!("bearer {CRM_KEY}"), format!("BEARER \t{CRM_KEY} "), format!("Bearer  {CRM_KEY}\t")] {
        let (response, seen) = through(request(Some(&value))).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{value:?}");
        assert_eq!(&*caller_of(&seen.expect("passed on")).name, "crm", "{value:?}");
    }
}

/// `?access_token=` through the redaction middleware that runs before auth in
/// the stack: the key moves into a `QueryCredential`, and the inner service
/// sees the caller and a URI without the key.
#[tokio::test]
async fn an_access_token_in_the_query_authenticates_and_never_reaches_the_inner_service() {
    let keys = keys();
    let inner = tower::service_fn(|req: Request| async move {
        let caller = req.extensions().get::<Arc<Caller>>().map(|c| c.name.to_string());
        Ok::<_, Infallible>(
            (StatusCode::OK, format!("{} {}", caller.as_deref().unwrap_or("-"), req.uri())).into_response(),
        )
    });
    let service = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(keys.known_keys(), super::super::redact::redact_query_credentials))
        .layer(AuthLayer::new(Arc::clone(&keys)))
        .service(inner);
    let req = Request::builder()
        .uri(format!("/v1/summaries/sum_1?wait=5&access_token={PBX_ONLY_KEY}"))
        .body(Body::empty())
        .unwrap();
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
    assert_eq!(body, "pbx-only /v1/summaries/sum_1?wait=5&access_token=REDACTED");
}

#[tokio::test]
async fn a_key_no_caller_has_is_401_invalid_token_and_not_passed_on() {
    for value in [
        "Bearer not-a-configured-key".to_owned(),
        format!("Bearer {CRM_KEY}x"),
        format!("Basic {CRM_KEY}"),
        // A scheme without a key.
        "Bearer".to_owned(),
    ] {
        let (response, seen) = through(request(Some(&value))).await;
        assert!(seen.is_none(), "{value:?} reached the inner service");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value:?}");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"summary-gateway\", error=\"invalid_token\"",
            "{value:?}"
        );
        assert_eq!(problem_code(&response), "unauthorized");
    }
}

/// The header is taken when present, even with a valid key in the query: a
/// wrong header is not rescued by a second credential.
#[tokio::test]
async fn a_wrong_bearer_key_is_refused_even_with_a_valid_query_key() {
    let mut req = request(Some("Bearer not-a-configured-key"));
    req.extensions_mut().insert(QueryCredential(Secret::new(CRM_KEY.to_owned())));
    let (response, seen) = through(req).await;
    assert!(seen.is_none());
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_key_is_401_with_a_bearer_challenge_and_not_passed_on() {
    for req in [request(None), request(Some("Bearer   ")), {
        let mut req = request(None);
        req.extensions_mut().insert(QueryCredential(Secret::new(String::new())));
        req
    }] {
        let (response, seen) = through(req).await;
        assert!(seen.is_none(), "reached the inner service");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"summary-gateway\"");
        assert_eq!(problem_code(&response), "unauthorized");
    }
}

/// The layer does not judge scopes (it cannot know the provider before the
/// body is read); it hands the handlers a caller that carries them.
#[tokio::test]
async fn the_caller_passed_on_carries_its_provider_scope() {
    let (_, seen) = through(request(Some(&format!("Bearer {PBX_ONLY_KEY}")))).await;
    let seen = seen.expect("passed on");
    let limited = caller_of(&seen);
    assert_eq!(&*limited.name, "pbx-only");
    assert!(limited.may_use("pbx"));
    assert!(!limited.may_use("commbox"));

    let (_, seen) = through(request(Some(&format!("Bearer {CRM_KEY}")))).await;
    let seen = seen.expect("passed on");
    let any = caller_of(&seen);
    assert!(any.may_use("pbx") && any.may_use("commbox"), "no providers list: every provider");
}
