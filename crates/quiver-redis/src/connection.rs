//! Connections to plain Redis (a connection manager that reconnects) or to Redis Cluster (a
//! cluster connection that follows MOVED/ASK, refreshes its slot map and reconnects), and
//! the per-node commands the store needs (scans, replication offsets, sizes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisFuture, RedisResult, TlsCertificates, Value,
};

use crate::error::{RedisStoreError, Result};

/// How to reach a Redis deployment.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `host:port` of one or more nodes (of a cluster, any: the others are discovered).
    pub nodes: Vec<String>,
    /// ACL user name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// TLS to every node, when set.
    pub tls: Option<TlsOptions>,
    /// How long one command may wait for its answer (and a connection for its handshake).
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:6379".into()],
            username: None,
            password: None,
            tls: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// TLS settings: PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Certificate authorities to trust (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for servers that require one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Whether the deployment is one server or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One server (possibly with replicas).
    Standalone,
    /// Redis Cluster.
    Cluster,
}

/// A connection to either kind of deployment; cheap to clone (clones share the sockets).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// One node of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn parse_node(node: &str) -> Result<Node> {
    let (host, port) = node
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| RedisStoreError::Config(format!("'{node}' is not host:port")))?;
    Ok(Node {
        host: host.trim_matches(['[', ']']).to_owned(),
        port,
    })
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| RedisStoreError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of `tls`, read from their files.
fn certificates(tls: &TlsOptions) -> Result<TlsCertificates> {
    let client_tls = match &tls.client {
        Some((cert, key)) => Some(ClientTlsConfig {
            client_cert: read_pem(cert)?,
            client_key: read_pem(key)?,
        }),
        None => None,
    };
    let root_cert = tls.ca_file.as_deref().map(read_pem).transpose()?;
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// The connection settings of one node.
fn connection_info(node: &Node, options: &RedisOptions) -> RedisResult<ConnectionInfo> {
    let addr = if options.tls.is_some() {
        ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(node.host.clone(), node.port)
    };
    let mut redis = RedisConnectionInfo::default();
    if let Some(user) = &options.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &options.password {
        redis = redis.set_password(password);
    }
    Ok(addr.into_connection_info()?.set_redis_settings(redis))
}

/// The nodes of `options`, for messages (never credentials).
pub(crate) fn describe(options: &RedisOptions) -> String {
    let scheme = if options.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    format!("{scheme}://{}", options.nodes.join(","))
}

impl Connection {
    /// Connects to the deployment of `options`, finding out from the first node that
    /// answers whether it is a cluster.
    pub(crate) async fn open(options: &RedisOptions) -> Result<(Self, Mode)> {
        let store = describe(options);
        let redis = |source| RedisStoreError::Redis {
            store: store.clone(),
            source,
        };
        if options.nodes.is_empty() {
            return Err(RedisStoreError::Config("no nodes to connect to".into()));
        }
        let nodes = options
            .nodes
            .iter()
            .map(|n| parse_node(n))
            .collect::<Result<Vec<_>>>()?;
        let certs = options.tls.as_ref().map(certificates).transpose()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let mut last_error = None;
        for node in &nodes {
            let info = connection_info(node, options).map_err(redis)?;
            let client = match &certs {
                Some(certs) => Client::build_with_tls(info, certs.clone()),
                None => Client::open(info),
            }
            .map_err(redis)?;
            let mut single = match ConnectionManager::new_with_config(client, config.clone()).await
            {
                Ok(c) => c,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut single)
                .await
                .map_err(redis)?;
            if !info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                return Ok((Self::Single(single), Mode::Standalone));
            }
            let infos = nodes
                .iter()
                .map(|n| connection_info(n, options))
                .collect::<RedisResult<Vec<_>>>()
                .map_err(redis)?;
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(options.timeout)
                .response_timeout(options.timeout)
                .retries(3)
                .min_retry_wait(20)
                .max_retry_wait(250);
            if let Some(user) = &options.username {
                builder = builder.username(user);
            }
            if let Some(password) = &options.password {
                builder = builder.password(password);
            }
            if let Some(certs) = &certs {
                builder = builder.certs(certs.clone());
            }
            let cluster = builder
                .build()
                .map_err(redis)?
                .get_async_connection()
                .await
                .map_err(redis)?;
            return Ok((Self::Cluster(cluster), Mode::Cluster));
        }
        Err(redis(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no node answered"))
        })))
    }

    /// The masters that serve slots now (the one server when standalone).
    pub(crate) async fn masters(&mut self) -> RedisResult<Vec<Node>> {
        match self {
            Self::Single(_) => Ok(vec![Node {
                host: String::new(),
                port: 0,
            }]),
            Self::Cluster(c) => {
                let text: String = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("NODES").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(redis::RedisError::from))?;
                Ok(cluster_masters(&text))
            }
        }
    }

    /// Sends `cmd` to `node` (one of [`Connection::masters`]).
    pub(crate) async fn on_node<T: redis::FromRedisValue>(
        &mut self,
        node: &Node,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => c
                .route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: node.host.clone(),
                        port: node.port,
                    }),
                )
                .await
                .and_then(|v| redis::from_redis_value(v).map_err(redis::RedisError::from)),
        }
    }
}

/// The masters that own slots, from `CLUSTER NODES`
/// (`<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`).
fn cluster_masters(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serves = fields.len() > 8;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") || !serves {
                return None;
            }
            let address = fields.get(1)?.split(['@', ',']).next()?;
            parse_node(address).ok()
        })
        .collect()
}

/// The replication state of one node, from `INFO replication`: its offset, and each online
/// replica's offset.
pub(crate) fn replication_offsets(info: &str) -> (u64, Vec<(String, u64)>) {
    let mut offset = 0;
    let mut replicas = Vec::new();
    for line in info.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("master_repl_offset:") {
            offset = v.parse().unwrap_or(0);
        } else if line.starts_with("slave")
            && let Some((_, fields)) = line.split_once(':')
        {
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            if field("state") == Some("online") {
                let at = format!(
                    "{}:{}",
                    field("ip").unwrap_or("?"),
                    field("port").unwrap_or("?")
                );
                replicas.push((
                    at,
                    field("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
                ));
            }
        }
    }
    (offset, replicas)
}

/// A numeric field of an `INFO` answer.
pub(crate) fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_that_serve_slots_are_found() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host.example master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master - 0 0 5 connected
";
        let masters: Vec<String> = cluster_masters(text).iter().map(Node::to_string).collect();
        assert_eq!(masters, ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }

    #[test]
    fn replication_offsets_of_online_replicas() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=7003,state=online,offset=90,lag=0\r\nslave1:ip=127.0.0.1,port=7004,state=wait_bgsave,offset=0,lag=0\r\nmaster_repl_offset:100\r\n";
        assert_eq!(
            replication_offsets(info),
            (100, vec![("127.0.0.1:7003".to_owned(), 90)])
        );
        assert_eq!(
            info_field("used_memory:1024\r\n", "used_memory"),
            Some(1024)
        );
        assert_eq!(info_field("used_memory_rss:1\r\n", "used_memory"), None);
    }

    #[test]
    fn nodes_are_host_and_port() {
        assert_eq!(
            parse_node("[::1]:6379").unwrap(),
            Node {
                host: "::1".into(),
                port: 6379
            }
        );
        assert!(parse_node("localhost").is_err());
        let options = RedisOptions {
            password: Some("secret".into()),
            ..RedisOptions::default()
        };
        assert!(!format!("{options:?}").contains("secret"));
        assert_eq!(describe(&options), "redis://127.0.0.1:6379");
    }
}
