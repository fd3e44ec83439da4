//! Request ids for requests that come without one: a random 64-bit prefix per
//! process and a counter (`3f9c2a1b7d4e8c06-0000002a`). Unique across replicas
//! without drawing randomness or formatting a UUID on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

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

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        Some(RequestId::new(self.next()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
