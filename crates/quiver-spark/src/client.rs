//! A thin Spark Connect client: one session per piece of work, SQL plans, Arrow results,
//! entity tables uploaded as local relations (cached as artifacts when large), interrupts.

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use futures::StreamExt;
use quiver_core::SparkSettings;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Result, SparkError};
use crate::proto as pb;
use pb::spark_connect_service_client::SparkConnectServiceClient;

/// The port of `sc://host` without one.
const DEFAULT_PORT: u16 = 15002;
/// Entity tables up to this size go inline in the plan; larger ones are uploaded first, in
/// chunks (the server's default message limit is 128 MiB).
pub(crate) const INLINE_BYTES: usize = 16 << 20;
/// Bytes per uploaded chunk, about.
const ARTIFACT_CHUNK: usize = 4 << 20;
/// Chunks per upload message (well under the server's 128 MiB message limit).
const CHUNKS_PER_MESSAGE: usize = 8;
/// How Quiver appears to the server.
const CLIENT_TYPE: &str = "quiver";

/// Settings every session starts with: time as UTC, nanosecond Parquet times as their raw
/// values (exact; Spark's timestamps are microseconds).
const SESSION_CONF: &[(&str, &str)] = &[
    ("spark.sql.session.timeZone", "UTC"),
    ("spark.sql.legacy.parquet.nanosAsLong", "true"),
];

/// The `host:port` of a Spark Connect URL (`sc://host[:port][/;param=value…]`).
pub(crate) fn endpoint_of(url: &str) -> Result<(String, u16)> {
    let bad = |message: &str| SparkError::Settings {
        url: url.to_owned(),
        message: message.to_owned(),
    };
    let rest = url
        .strip_prefix("sc://")
        .ok_or_else(|| bad("expected sc://host:port"))?;
    let authority = rest.split(['/', ';']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if rest[authority.len()..]
        .trim_start_matches('/')
        .contains("use_ssl=true")
        || rest.contains("token=")
    {
        return Err(bad(
            "TLS and tokens are not supported yet; reach the cluster on a trusted network",
        ));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_owned(),
            port.parse().map_err(|_| bad("the port is not a number"))?,
        )),
        None => Ok((authority.to_owned(), DEFAULT_PORT)),
    }
}

/// A random version-4 UUID, as Spark Connect wants its session and operation ids.
pub(crate) fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One Spark Connect session, shared by the requests of an engine (the cluster compiles a
/// query's code once per session). Each request works on its own copy ([`Session::request`]):
/// its operations carry the request's tag, so a cancel interrupts only them, and its temporary
/// views are named after the tag and dropped when it ends ([`Session::finish`]).
#[derive(Clone)]
pub(crate) struct Session {
    client: SparkConnectServiceClient<Channel>,
    id: String,
    user: pb::UserContext,
    /// The endpoint, for messages.
    cluster: String,
    /// The server's id of the session, sent with every request: a server that restarted (and
    /// lost the session's settings) refuses the session instead of running without them.
    server_side: Option<String>,
    /// The tag of this request's operations.
    tag: String,
    /// The temporary views this request created.
    views: Arc<Mutex<Vec<String>>>,
}

impl Session {
    /// Connects and opens a session with [`SESSION_CONF`] and the settings' `conf`.
    pub(crate) async fn open(settings: &SparkSettings) -> Result<Self> {
        let (host, port) = endpoint_of(&settings.connect)?;
        let cluster = format!("{host}:{port}");
        let unreachable = |message: String| SparkError::Unreachable {
            cluster: cluster.clone(),
            message,
        };
        let channel = Endpoint::from_shared(format!("http://{cluster}"))
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let client = SparkConnectServiceClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let mut session = Self {
            client,
            id: uuid(),
            user: pb::UserContext {
                user_id: "quiver".into(),
                user_name: "quiver".into(),
                extensions: Vec::new(),
            },
            cluster,
            server_side: None,
            tag: uuid(),
            views: Arc::default(),
        };
        let pairs = SESSION_CONF
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(settings.conf.clone())
            .collect();
        session.server_side = Some(session.set_conf(pairs).await?);
        Ok(session)
    }

    /// A copy of the session for one request: a tag and a list of views of its own.
    pub(crate) fn request(&self) -> Self {
        Self {
            tag: uuid(),
            views: Arc::default(),
            ..self.clone()
        }
    }

    /// The session's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The name of this request's temporary view `base`.
    pub(crate) fn view_name(&self, base: &str) -> String {
        format!("{base}_{}", self.tag.replace('-', "_"))
    }

    /// Drops the temporary views this request created.
    pub(crate) async fn finish(&self) {
        let views = std::mem::take(&mut *self.views.lock().unwrap_or_else(PoisonError::into_inner));
        for view in views {
            let drop = format!("DROP VIEW IF EXISTS {view}");
            if let Err(e) = self.sql(drop, &uuid(), None).await {
                tracing::debug!(cluster = %self.cluster, %view, error = %e, "dropping a temporary view failed");
            }
        }
    }

    /// Records `name` as one of this request's temporary views.
    pub(crate) fn created_view(&self, name: &str) {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name.to_owned());
    }

    /// Sets session settings; the server's id of the session.
    async fn set_conf(&self, pairs: Vec<(String, String)>) -> Result<String> {
        let request = pb::ConfigRequest {
            session_id: self.id.clone(),
            user_context: Some(self.user.clone()),
            client_type: Some(CLIENT_TYPE.into()),
            client_observed_server_side_session_id: self.server_side.clone(),
            operation: Some(pb::config_request::Operation {
                op_type: Some(pb::config_request::operation::OpType::Set(
                    pb::config_request::Set {
                        pairs: pairs
                            .into_iter()
                            .map(|(key, value)| pb::KeyValue {
                                key,
                                value: Some(value),
                            })
                            .collect(),
                        silent: None,
                    },
                )),
            }),
        };
        let response = self
            .client
            .clone()
            .config(request)
            .await
            .map_err(|s| self.failed(None, &s))?;
        Ok(response.into_inner().server_side_session_id)
    }

    /// Runs a SQL query as operation `operation_id`; its result as record batches.
    pub(crate) async fn sql(
        &self,
        query: String,
        operation_id: &str,
        view: Option<&str>,
    ) -> Result<Vec<RecordBatch>> {
        self.execute(sql_plan(query), operation_id, view).await
    }

    /// Registers `batches` (of `schema`) as the session's temporary view `name`: inline in
    /// the plan when small, else uploaded as cached chunks first.
    pub(crate) async fn create_view(
        &self,
        name: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<()> {
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        // Encoding, hashing and checksumming a large table is CPU work: it runs on the
        // blocking pool, so the caller's cancel is still seen while it runs.
        let (schema, batches) = (SchemaRef::clone(schema), batches.to_vec());
        let encoded = tokio::task::spawn_blocking(move || {
            if bytes <= INLINE_BYTES {
                ipc_stream(&schema, &batches).map(Encoded::Inline)
            } else {
                chunks(&schema, &batches).map(Encoded::Chunks)
            }
        })
        .await
        .map_err(|e| SparkError::Failed {
            cluster: self.cluster.clone(),
            view: None,
            message: format!("encoding the entity table failed: {e}"),
        })??;
        let input = match encoded {
            Encoded::Inline(data) => {
                relation(pb::relation::RelType::LocalRelation(pb::LocalRelation {
                    data: Some(data),
                    schema: None,
                }))
            }
            Encoded::Chunks(chunks) => relation(pb::relation::RelType::ChunkedCachedLocalRelation(
                pb::ChunkedCachedLocalRelation {
                    data_hashes: self.cache(chunks).await?,
                    schema_hash: None,
                },
            )),
        };
        let plan = pb::Plan {
            op_type: Some(pb::plan::OpType::Command(pb::Command {
                command_type: Some(pb::command::CommandType::CreateDataframeView(
                    pb::CreateDataFrameViewCommand {
                        input: Some(input),
                        name: name.to_owned(),
                        is_global: false,
                        replace: true,
                    },
                )),
            })),
        };
        self.execute(plan, &uuid(), None).await?;
        self.created_view(name);
        Ok(())
    }

    /// Uploads chunks as cached artifacts (`cache/<sha-256>`); their hashes, in order.
    async fn cache(&self, chunks: Vec<Chunk>) -> Result<Vec<String>> {
        let hashes: Vec<String> = chunks.iter().map(|c| c.hash.clone()).collect();
        // Equal chunks are uploaded once (the server refuses a name twice in one upload);
        // several chunks per message, each whole (the server's single-chunk form).
        let mut seen = std::collections::HashSet::new();
        let artifacts: Vec<pb::add_artifacts_request::SingleChunkArtifact> = chunks
            .into_iter()
            .filter(|c| seen.insert(c.hash.clone()))
            .map(|c| pb::add_artifacts_request::SingleChunkArtifact {
                name: format!("cache/{}", c.hash),
                data: Some(pb::add_artifacts_request::ArtifactChunk {
                    crc: i64::from(c.crc),
                    data: c.data,
                }),
            })
            .collect();
        let mut requests = Vec::new();
        let mut artifacts = artifacts.into_iter().peekable();
        while artifacts.peek().is_some() {
            let batch: Vec<_> = artifacts.by_ref().take(CHUNKS_PER_MESSAGE).collect();
            requests.push(
                self.artifact_request(pb::add_artifacts_request::Payload::Batch(
                    pb::add_artifacts_request::Batch { artifacts: batch },
                )),
            );
        }
        let response = self
            .client
            .clone()
            .add_artifacts(futures::stream::iter(requests))
            .await
            .map_err(|s| self.failed(None, &s))?
            .into_inner();
        if let Some(bad) = response.artifacts.iter().find(|a| !a.is_crc_successful) {
            return Err(SparkError::Failed {
                cluster: self.cluster.clone(),
                view: None,
                message: format!("the upload of {} was corrupted", bad.name),
            });
        }
        Ok(hashes)
    }

    fn artifact_request(
        &self,
        payload: pb::add_artifacts_request::Payload,
    ) -> pb::AddArtifactsRequest {
        pb::AddArtifactsRequest {
            session_id: self.id.clone(),
            user_context: Some(self.user.clone()),
            client_type: Some(CLIENT_TYPE.into()),
            payload: Some(payload),
            client_observed_server_side_session_id: self.server_side.clone(),
        }
    }

    /// Executes a plan; the Arrow batches it answers.
    async fn execute(
        &self,
        plan: pb::Plan,
        operation_id: &str,
        view: Option<&str>,
    ) -> Result<Vec<RecordBatch>> {
        let mut stream = self.start(plan, operation_id, view).await?;
        let mut batches = Vec::new();
        while let Some(response) = stream.next().await {
            batches.extend(arrow_batches(response.map_err(|s| self.failed(view, &s))?)?);
        }
        Ok(batches)
    }

    /// Runs a SQL query as operation `operation_id`, sending its record batches to `to` as
    /// they arrive (a slow receiver holds the cluster's stream back); stops early when the
    /// receiver is gone.
    pub(crate) async fn sql_to(
        &self,
        query: String,
        operation_id: &str,
        view: &str,
        to: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let plan = sql_plan(query);
        let mut stream = self.start(plan, operation_id, Some(view)).await?;
        while let Some(response) = stream.next().await {
            let response = response.map_err(|s| self.failed(Some(view), &s))?;
            for batch in arrow_batches(response)? {
                if to.send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Starts executing a plan; its stream of responses.
    async fn start(
        &self,
        plan: pb::Plan,
        operation_id: &str,
        view: Option<&str>,
    ) -> Result<tonic::Streaming<pb::ExecutePlanResponse>> {
        let request = pb::ExecutePlanRequest {
            session_id: self.id.clone(),
            user_context: Some(self.user.clone()),
            operation_id: Some(operation_id.to_owned()),
            plan: Some(plan),
            client_type: Some(CLIENT_TYPE.into()),
            tags: vec![self.tag.clone()],
            client_observed_server_side_session_id: self.server_side.clone(),
            ..Default::default()
        };
        Ok(self
            .client
            .clone()
            .execute_plan(request)
            .await
            .map_err(|s| self.failed(view, &s))?
            .into_inner())
    }

    /// Interrupts this request's operations (those with its tag).
    pub(crate) async fn interrupt(&self) {
        let request = pb::InterruptRequest {
            session_id: self.id.clone(),
            user_context: Some(self.user.clone()),
            client_type: Some(CLIENT_TYPE.into()),
            interrupt_type: pb::interrupt_request::InterruptType::Tag.into(),
            interrupt: Some(pb::interrupt_request::Interrupt::OperationTag(
                self.tag.clone(),
            )),
            client_observed_server_side_session_id: self.server_side.clone(),
        };
        if let Err(e) = self.client.clone().interrupt(request).await {
            tracing::warn!(cluster = %self.cluster, error = %e.message(), "interrupting Spark operations failed");
        }
    }

    /// Releases the session (its views and cached uploads), for every request using it.
    pub(crate) async fn release(self) {
        let request = pb::ReleaseSessionRequest {
            session_id: self.id.clone(),
            user_context: Some(self.user.clone()),
            client_type: Some(CLIENT_TYPE.into()),
            allow_reconnect: false,
        };
        if let Err(e) = self.client.clone().release_session(request).await {
            tracing::debug!(cluster = %self.cluster, error = %e.message(), "releasing a Spark session failed");
        }
    }

    fn failed(&self, view: Option<&str>, status: &tonic::Status) -> SparkError {
        let message = status.message().trim().to_owned();
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => SparkError::Unreachable {
                cluster: self.cluster.clone(),
                message,
            },
            tonic::Code::Cancelled => SparkError::Cancelled,
            _ => SparkError::Failed {
                cluster: self.cluster.clone(),
                view: view.map(str::to_owned),
                message,
            },
        }
    }
}

/// The plan of a SQL query.
fn sql_plan(query: String) -> pb::Plan {
    pb::Plan {
        op_type: Some(pb::plan::OpType::Root(relation(
            pb::relation::RelType::Sql(pb::Sql {
                query,
                ..Default::default()
            }),
        ))),
    }
}

/// The record batches of one response (none unless it carries Arrow data).
fn arrow_batches(response: pb::ExecutePlanResponse) -> Result<Vec<RecordBatch>> {
    match response.response_type {
        Some(pb::execute_plan_response::ResponseType::ArrowBatch(b)) => {
            Ok(StreamReader::try_new(Cursor::new(b.data), None)?
                .collect::<arrow::error::Result<_>>()?)
        }
        _ => Ok(Vec::new()),
    }
}

/// A relation with no common fields.
fn relation(rel_type: pb::relation::RelType) -> pb::Relation {
    pb::Relation {
        common: None,
        rel_type: Some(rel_type),
    }
}

/// `batches` as one Arrow IPC stream.
fn ipc_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// An entity table encoded for upload.
enum Encoded {
    /// One IPC stream, inline in the plan.
    Inline(Vec<u8>),
    /// IPC streams of about [`ARTIFACT_CHUNK`] bytes each, uploaded first.
    Chunks(Vec<Chunk>),
}

/// One uploaded piece of a large entity table.
struct Chunk {
    data: Vec<u8>,
    /// SHA-256, hex: the artifact's name.
    hash: String,
    crc: u32,
}

/// `batches` as IPC streams of about [`ARTIFACT_CHUNK`] bytes, hashed and checksummed.
fn chunks(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<Chunk>> {
    let mut chunks = Vec::new();
    for batch in batches {
        let rows_per_chunk = (ARTIFACT_CHUNK * batch.num_rows().max(1)
            / batch.get_array_memory_size().max(1))
        .max(1);
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = rows_per_chunk.min(batch.num_rows() - offset);
            let data = ipc_stream(schema, &[batch.slice(offset, len)])?;
            let hash = ring::digest::digest(&ring::digest::SHA256, &data)
                .as_ref()
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            let crc = crc32(&data);
            chunks.push(Chunk { data, hash, crc });
            offset += len;
        }
    }
    Ok(chunks)
}

/// The CRC-32 (IEEE) Spark Connect checks uploads with: slice-by-8, eight bytes per step.
fn crc32(data: &[u8]) -> u32 {
    const TABLES: [[u32; 256]; 8] = {
        let mut tables = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
                bit += 1;
            }
            tables[0][i] = crc;
            i += 1;
        }
        let mut t = 1;
        while t < 8 {
            let mut i = 0;
            while i < 256 {
                let prev = tables[t - 1][i];
                tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
                i += 1;
            }
            t += 1;
        }
        tables
    };
    let mut crc = !0u32;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let lo = crc ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        crc = TABLES[7][(lo & 0xFF) as usize]
            ^ TABLES[6][((lo >> 8) & 0xFF) as usize]
            ^ TABLES[5][((lo >> 16) & 0xFF) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][usize::from(w[4])]
            ^ TABLES[2][usize::from(w[5])]
            ^ TABLES[1][usize::from(w[6])]
            ^ TABLES[0][usize::from(w[7])];
    }
    for &b in words.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    !crc
}

/// An error with its causes, for messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_urls() {
        assert_eq!(endpoint_of("sc://h:1").unwrap(), ("h".into(), 1));
        assert_eq!(endpoint_of("sc://h").unwrap(), ("h".into(), DEFAULT_PORT));
        assert_eq!(endpoint_of("sc://h:7/;user_id=a").unwrap(), ("h".into(), 7));
        assert!(endpoint_of("http://h:1").is_err());
        assert!(endpoint_of("sc://").is_err());
        assert!(endpoint_of("sc://h:x").is_err());
        assert!(endpoint_of("sc://h:1/;use_ssl=true").is_err());
    }

    #[test]
    fn crc_and_uuid() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let bitwise = |data: &[u8]| {
            let mut crc = !0u32;
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
                }
            }
            !crc
        };
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 100, 1000] {
            assert_eq!(crc32(&data[..len]), bitwise(&data[..len]), "{len} bytes");
        }
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
