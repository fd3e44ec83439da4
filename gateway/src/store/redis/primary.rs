//! Which Redis the store talks to: the one `store.redis_url` names, the
//! primary Redis Sentinel names (`store.sentinel`), followed through failovers,
//! or a Redis Cluster (`store.cluster`, `redis+cluster://`), whose connection
//! follows the cluster's slots and failovers itself.
//!
//! With Sentinel a task asks the sentinels for the primary
//! (`SENTINEL get-master-addr-by-name`) every [`LOOK_EVERY`], and at once when a
//! command fails the way a failover makes it fail (connection refused or lost,
//! `READONLY` from a demoted primary). When the answer changes, new commands go
//! to the new primary (a new connection), and the event subscription is made
//! again there ([`Primary::changes`]); replicas waiting on events look at the
//! store again (`StoreEvent::Resync`), so nothing published during the switch is
//! missed for good.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use gateway_config::{ClusterSeeds, SentinelConfig, StoreConfig};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::{Client, IntoConnectionInfo};
use tokio::sync::{Notify, watch};

use super::connect::{self, Conn};
use crate::store::StoreError;

/// How often the sentinels are asked where the primary is.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A Redis (or a cluster) to send commands to.
pub(super) struct Node {
    /// Where the event subscription may be made, tried in turn: the Redis itself,
    /// or each of a cluster's seed nodes (a cluster forwards every `PUBLISH` to
    /// all its nodes, so one subscription on any node hears the whole fleet).
    pub subscribers: Vec<Client>,
    pub conn: Conn,
    /// `host:port`, as Sentinel named it (none for `redis_url` or a cluster).
    pub addr: Option<String>,
}

/// The Redis commands go to now.
pub(super) struct Primary {
    node: RwLock<Option<Arc<Node>>>,
    /// Bumped when the primary changes (the subscription moves with it).
    changed: watch::Sender<u64>,
    /// Ask the sentinels now (a command failed as a failover makes it fail).
    look_now: Notify,
    /// Whether the primary is found through Sentinel.
    followed: bool,
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1))
}

fn node(client: Client, timeout: Duration, addr: Option<String>) -> Result<Node, String> {
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config(timeout))
        .map_err(|e| format!("store: {}", e.category()))?;
    Ok(Node { subscribers: vec![client], conn: Conn::Single(conn), addr })
}

/// The clients of a cluster: its connection and one client per seed node.
pub(super) fn cluster_clients(
    config: &StoreConfig,
    seeds: &ClusterSeeds,
) -> Result<(ClusterClient, Vec<Client>), String> {
    let cluster = connect::cluster_client(config, seeds)?;
    let subscribers =
        seeds.nodes.iter().map(|n| connect::node_client(config, seeds, n)).collect::<Result<Vec<_>, _>>()?;
    Ok((cluster, subscribers))
}

/// A cluster, connected in the background (a gateway whose cluster is down starts, degraded).
fn cluster_node(config: &StoreConfig, seeds: &ClusterSeeds) -> Result<Node, String> {
    let (cluster, subscribers) = cluster_clients(config, seeds)?;
    let conn = cluster.get_pending_async_connection_with_config(
        ClusterConfig::new().set_connection_timeout(config.timeout).set_response_timeout(config.timeout),
    );
    Ok(Node { subscribers, conn: Conn::Cluster(conn), addr: None })
}

impl Primary {
    /// The Redis of `config`: its URL's at once, or (with Sentinel) the primary
    /// as soon as a sentinel names it, followed by a task of its own.
    pub(super) fn new(config: &StoreConfig) -> Result<Arc<Self>, String> {
        let (changed, _) = watch::channel(0);
        let Some(sentinel) = config.sentinel.clone() else {
            let node = match config.cluster_seeds() {
                Some(seeds) => cluster_node(config, &seeds)?,
                None => node(connect::client(config)?, config.timeout, None)?,
            };
            return Ok(Arc::new(Self {
                node: RwLock::new(Some(Arc::new(node))),
                changed,
                look_now: Notify::new(),
                followed: false,
            }));
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "store.sentinel: the store must be built inside the runtime".to_owned())?;
        let primary = Arc::new(Self { node: RwLock::new(None), changed, look_now: Notify::new(), followed: true });
        runtime.spawn(follow(Arc::downgrade(&primary), sentinel, config.clone()));
        Ok(primary)
    }

    /// The Redis to talk to now.
    pub(super) fn node(&self) -> Result<Arc<Node>, StoreError> {
        self.node
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError("redis: no primary known yet (asking the sentinels)".into()))
    }

    /// Changes of the primary, for the event subscription.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A command failed with `e`: if a failover may be why, ask the sentinels now.
    pub(super) fn failed(&self, e: &redis::RedisError) {
        if self.followed
            && (e.is_connection_refusal()
                || e.is_io_error()
                || e.is_connection_dropped()
                || e.code() == Some("READONLY"))
        {
            self.look_now.notify_one();
        }
    }

    fn set(&self, node: Node) {
        *self.node.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(node));
        self.changed.send_modify(|generation| *generation += 1);
    }
}

/// Asks the sentinels in turn; the first that names a primary decides.
async fn ask(sentinel: &SentinelConfig, timeout: Duration) -> Result<String, String> {
    let mut last = "no sentinel answered".to_owned();
    for node in &sentinel.nodes {
        let info = format!("redis://{node}").into_connection_info().map_err(|e| e.category().to_owned());
        let info = match (info, &sentinel.password) {
            (Ok(info), Some(password)) => {
                let settings = info.redis_settings().clone().set_password(password.expose());
                Ok(info.set_redis_settings(settings))
            }
            (info, _) => info,
        };
        let asked = async {
            let client = Client::open(info?).map_err(|e| e.category().to_owned())?;
            let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| connect::describe(&e))?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&sentinel.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
                .map_err(|e| connect::describe(&e))
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(Some((host, port)))) => return Ok(format!("{host}:{port}")),
            Ok(Ok(None)) => last = format!("sentinel {node} does not know the master `{}`", sentinel.master),
            Ok(Err(e)) => last = format!("sentinel {node}: {e}"),
            Err(_) => last = format!("sentinel {node}: no answer within {}", humantime::format_duration(timeout)),
        }
    }
    Err(last)
}

/// The primary's client at `addr` with the store's credentials.
fn primary_client(config: &StoreConfig, sentinel: &SentinelConfig, addr: &str) -> Result<Client, String> {
    let info = format!("redis://{addr}/{}", sentinel.db).into_connection_info().map_err(|e| e.category().to_owned())?;
    Client::open(connect::with_credentials(info, config)).map_err(|e| e.category().to_owned())
}

/// Follows the primary until the store is dropped.
async fn follow(primary: Weak<Primary>, sentinel: SentinelConfig, config: StoreConfig) {
    let mut failing = false;
    loop {
        let asked = ask(&sentinel, config.timeout).await;
        let Some(this) = primary.upgrade() else { return };
        match asked {
            Ok(addr) => {
                failing = false;
                let current = this.node.read().ok().and_then(|n| n.as_ref().and_then(|n| n.addr.clone()));
                if current.as_deref() != Some(addr.as_str()) {
                    match primary_client(&config, &sentinel, &addr)
                        .and_then(|c| node(c, config.timeout, Some(addr.clone())))
                    {
                        Ok(node) => {
                            match &current {
                                Some(old) => {
                                    tracing::warn!(master = %sentinel.master, from = %old, to = %addr, "redis failover: following the new primary");
                                }
                                None => {
                                    tracing::info!(master = %sentinel.master, primary = %addr, "redis primary found through sentinel");
                                }
                            }
                            this.set(node);
                        }
                        Err(e) => {
                            tracing::warn!(primary = %addr, error = %e, "cannot use the primary the sentinels named");
                        }
                    }
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(master = %sentinel.master, error = %e, "no sentinel names the primary; asking again");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = this.look_now.notified() => {}
        }
    }
}
