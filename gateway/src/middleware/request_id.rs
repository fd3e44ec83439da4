//! Request ids: the caller's `x-request-id` if it is one the gateway can echo
//! safely (at most [`MAX_LEN`] visible ASCII characters), else a new one — a
//! random 64-bit prefix per process and a counter (`3f9c2a1b7d4e8c06-0000002a`),
//! unique across replicas without drawing randomness or formatting a UUID on
//! every request. A caller's id that is replaced is logged (its length, never
//! its bytes): 64 KiB or raw 0x80–0xFF bytes would otherwise be echoed into
//! headers, bodies and log lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderValue;
use tower_http::request_id::RequestId;

use super::problem::X_REQUEST_ID;

/// The longest caller-given request id kept.
pub const MAX_LEN: usize = 128;

/// Whether a caller's `x-request-id` is kept: 1–[`MAX_LEN`] visible ASCII characters.
pub fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(u8::is_ascii_graphic)
}

/// Keeps an acceptable `x-request-id`, or sets a new one (logging a replaced
/// one), and puts it in the request's extensions ([`RequestId`]) for the layers
/// below. A request mapper: `ServiceBuilder::map_request`.
pub fn set_request_id<B>(make: &MakeId, mut req: http::Request<B>) -> http::Request<B> {
    let id = match req.headers().get(X_REQUEST_ID) {
        Some(value) if acceptable(value) => value.clone(),
        given => {
            let received = given.map(HeaderValue::len);
            let id = make.next();
            if let Some(received_bytes) = received {
                tracing::info!(
                    request_id = id.to_str().unwrap_or_default(),
                    received_bytes,
                    "the caller's x-request-id was replaced: it must be at most {MAX_LEN} visible ASCII characters"
                );
            }
            req.headers_mut().insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    req.extensions_mut().insert(RequestId::new(id));
    req
}

/// Makes `x-request-id` values.
#[derive(Clone)]
pub struct MakeId {
    prefix: u64,
    counter: Arc<AtomicU64>,
}

impl Default for MakeId {
    fn default() -> Self {
        let prefix = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([7; 8]));
        Self { prefix, counter: Arc::new(AtomicU64::new(0)) }
    }
}

impl MakeId {
    /// A new id, as text.
    pub fn next_value(&self) -> String {
        self.next().to_str().unwrap_or("unknown").to_owned()
    }

    fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [b'-'; 25];
        for i in 0..16 {
            buf[i] = HEX[((self.prefix >> (60 - 4 * i)) & 0xf) as usize];
        }
        for i in 0..8 {
            buf[17 + i] = HEX[((n >> (28 - 4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        for ok in ["r-1", "0f6e-ABC_x.y:z/1", &"a".repeat(MAX_LEN)] {
            assert!(acceptable(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).unwrap(),
            HeaderValue::from_static("with space"),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_bytes(b"tab\there").unwrap(),
        ] {
            assert!(!acceptable(&bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_distinct_and_shaped() {
        let make = MakeId::default();
        let a = make.next();
        let b = make.next();
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert_eq!(a.len(), 25);
        assert_eq!(&a[16..], "-00000000");
        assert_ne!(MakeId::default().next(), make.next(), "another process, another prefix");
    }
}
