//! Events between replicas: published on `P:events`, received by one
//! subscription per replica that reconnects (with backoff) and tells the
//! gateway to look again ([`StoreEvent::Resync`]) whenever it may have missed some.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use providers::time::duration_ms;
use tokio_util::sync::CancellationToken;

use super::codec::decode_event;
use super::{RedisStore, describe};
use crate::store::{EventSink, StoreEvent};

impl RedisStore {
    /// Delivers other replicas' events to `sink` until `shutdown`, in a task of its own.
    pub(super) fn spawn_subscription(&self, sink: EventSink, shutdown: CancellationToken) {
        let primary = Arc::clone(&self.primary);
        let channel = self.channel();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut connected_before = false;
            let mut changes = primary.changes();
            // Which of the node's subscribers to try: the next one after a failure.
            let mut attempt = 0_usize;
            loop {
                changes.borrow_and_update();
                // The primary of now (with Sentinel: once one is known), or a node of the cluster.
                let client = primary
                    .node()
                    .ok()
                    .and_then(|node| node.subscribers.get(attempt % node.subscribers.len().max(1)).cloned());
                let session = async {
                    let Some(client) = client else { return Ok(None) };
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(Some(pubsub))
                };
                let connected = tokio::select! {
                    r = session => r,
                    () = shutdown.cancelled() => return,
                };
                match connected {
                    Ok(None) => {
                        // No primary yet: wait for one to be named.
                        tokio::select! {
                            _ = changes.changed() => {}
                            () = shutdown.cancelled() => return,
                        }
                        continue;
                    }
                    Ok(Some(mut pubsub)) => {
                        backoff = Duration::from_millis(100);
                        if connected_before {
                            tracing::info!("redis events: resubscribed");
                            sink(StoreEvent::Resync);
                        }
                        connected_before = true;
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(m) => {
                                        if let Some(event) = decode_event(m.get_payload_bytes()) {
                                            sink(event);
                                        }
                                    }
                                    None => break,
                                },
                                // A failover: subscribe on the new primary.
                                _ = changes.changed() => break,
                                () = shutdown.cancelled() => return,
                            }
                        }
                        tracing::warn!("redis events: subscription lost (or the primary changed); resubscribing");
                        attempt += 1;
                        // Whatever happens while disconnected is missed: look again once back.
                        sink(StoreEvent::Resync);
                    }
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), retry_in_ms = duration_ms(backoff), "redis events: cannot subscribe");
                        attempt += 1;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }
}
