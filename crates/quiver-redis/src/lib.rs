//! Quiver's online store on Redis and Redis Cluster: the same contract as the embedded
//! RocksDB store ([`quiver_online::OnlineStore`]), on storage that several `quiver serve`
//! processes share and that grows past one machine.
//!
//! - [`store`]: [`RedisStore`]: reads of every view of a request in one `MGET` (split per
//!   slot and sent to every node at once), newest-wins writes by a script per bucket, rows
//!   expiring at twice their view's ttl, view generations deleted by scanning each master,
//!   watermarks committed once the replicas have the rows, run records and leases in Redis.
//! - `keys`: the key layout (one slot per entity-key bucket, one per project's
//!   metadata).
//! - [`connection`]: plain Redis or Redis Cluster, TLS and ACL users, reconnecting clients.
//! - `scripts`: the Lua scripts that keep the contract inside Redis.
//!
//! ```no_run
//! use quiver_online::OnlineStore;
//! use quiver_redis::{RedisOptions, RedisStore};
//!
//! let store = RedisStore::open(&RedisOptions {
//!     nodes: vec!["127.0.0.1:7000".into()],
//!     ..RedisOptions::default()
//! })?;
//! println!("{:?}", store.stats()?);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

pub mod connection;
pub mod error;
mod keys;
mod scripts;
pub mod store;

pub use connection::{Mode, RedisOptions, TlsOptions};
pub use error::{RedisStoreError, Result};
pub use store::RedisStore;
