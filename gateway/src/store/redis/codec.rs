//! How values and events are written in Redis.

use std::sync::Arc;

use bytes::Bytes;
use providers::Status;

use crate::store::{StoreError, StoreEvent, StoredSummary};

/// `<status byte><provider>\n<json>`: what the cache-hit path needs without parsing the JSON.
pub(super) fn encode_summary(s: &StoredSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.provider.len() + s.body.len() + 2);
    out.push(match s.status {
        Status::Pending => b'p',
        Status::Completed => b'c',
        Status::Failed => b'f',
    });
    out.extend_from_slice(s.provider.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&s.body);
    out
}

pub(super) fn decode_summary(raw: &[u8]) -> Result<StoredSummary, StoreError> {
    let bad = || StoreError("redis: a stored summary is not in the gateway's format".into());
    let (&tag, rest) = raw.split_first().ok_or_else(bad)?;
    let status = match tag {
        b'p' => Status::Pending,
        b'c' => Status::Completed,
        b'f' => Status::Failed,
        _ => return Err(bad()),
    };
    let newline = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let provider = std::str::from_utf8(&rest[..newline]).map_err(|_| bad())?;
    Ok(StoredSummary { provider: Arc::from(provider), status, body: Bytes::copy_from_slice(&rest[newline + 1..]) })
}

/// `D <id>\n<summary>`, `F <id>`, `N <id>`.
pub(super) fn encode_event(event: &StoreEvent) -> Vec<u8> {
    match event {
        StoreEvent::Final { id, summary } => {
            let mut out = format!("D {id}\n").into_bytes();
            out.extend_from_slice(&encode_summary(summary));
            out
        }
        StoreEvent::FlightEnded { id } => format!("F {id}").into_bytes(),
        StoreEvent::Nudge { id } => format!("N {id}").into_bytes(),
        StoreEvent::Resync => b"R".to_vec(),
    }
}

pub(super) fn decode_event(raw: &[u8]) -> Option<StoreEvent> {
    let (head, rest) = match raw.iter().position(|&b| b == b'\n') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let head = std::str::from_utf8(head).ok()?;
    let (kind, id) = head.split_once(' ')?;
    let id = id.to_owned();
    match kind {
        "D" => Some(StoreEvent::Final { id, summary: decode_summary(rest?).ok()? }),
        "F" => Some(StoreEvent::FlightEnded { id }),
        "N" => Some(StoreEvent::Nudge { id }),
        _ => None,
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError(format!("could not serialize: {e}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError(format!("redis: a stored {what} is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_events_round_trip_through_their_encoding() {
        let summary = StoredSummary {
            provider: Arc::from("pbx-hq"),
            status: Status::Failed,
            body: Bytes::from_static(b"{\"a\":\n1}"),
        };
        let back = decode_summary(&encode_summary(&summary)).unwrap();
        assert_eq!(
            (back.provider.as_ref(), back.status, back.body.as_ref()),
            ("pbx-hq", Status::Failed, b"{\"a\":\n1}".as_ref())
        );
        match decode_event(&encode_event(&StoreEvent::Final { id: "sum_1".into(), summary })) {
            Some(StoreEvent::Final { id, summary }) => {
                assert_eq!((id.as_str(), summary.body.as_ref()), ("sum_1", b"{\"a\":\n1}".as_ref()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode_event(b"F sum_2"), Some(StoreEvent::FlightEnded { id }) if id == "sum_2"));
        assert!(matches!(decode_event(b"N sum_3"), Some(StoreEvent::Nudge { id }) if id == "sum_3"));
        assert!(decode_event(b"garbage").is_none());
        assert!(decode_summary(b"x").is_err());
    }
}
