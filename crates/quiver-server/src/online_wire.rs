//! `quiver.v1.OnlineService/GetOnlineFeatures` answered without building the response
//! message: the read's cells are written straight into protobuf bytes.
//!
//! Built as a `GetOnlineFeaturesResponse`, a 1 entity × 50 features answer costs 50 copied
//! names, 150 one-element vectors and a `Value` per cell before prost walks it all again to
//! encode it. Here each column's cells are decoded once into a reused buffer, measured, and
//! written. The bytes are exactly prost's encoding of the same message (the tests compare
//! them byte for byte), so every client decodes them as before.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use prost::Message;
use prost::encoding::{WireType, encoded_len_varint};
use quiver_online::{Cell, FeatureValue, FieldStatus, OnlineFeatures};
use quiver_ops::{EncodedRefs, FeatureSpec, FeatureStore, OpsError};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::EncodeBuf;
use tonic::codegen::{BoxFuture, StdError};
use tonic::server::NamedService;

use crate::codec::Decoder;
use crate::error::status;
use crate::gate::{caller_of, request_id_of};
use crate::grpc::OnlineGrpc;
use crate::proto::quiver::v1 as pb;
use pb::online_service_server::OnlineServiceServer;

/// The route answered here; every other route of the service goes to the generated server.
const GET_ONLINE_FEATURES: &str = "/quiver.v1.OnlineService/GetOnlineFeatures";

/// `quiver.v1.OnlineService`: `GetOnlineFeatures` encoded by [`encode_response`], the other
/// methods by the generated server of [`OnlineGrpc`].
#[derive(Clone)]
pub struct OnlineService {
    store: Arc<FeatureStore>,
    generated: OnlineServiceServer<OnlineGrpc>,
    max_request_bytes: usize,
}

impl OnlineService {
    /// Serves reads and pushes of `store`, refusing requests over `max_request_bytes`.
    pub fn new(store: Arc<FeatureStore>, max_request_bytes: usize) -> Self {
        Self {
            generated: OnlineServiceServer::new(OnlineGrpc::new(Arc::clone(&store)))
                .max_decoding_message_size(max_request_bytes),
            store,
            max_request_bytes,
        }
    }
}

impl NamedService for OnlineService {
    const NAME: &'static str = pb::online_service_server::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for OnlineService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != GET_ONLINE_FEATURES {
            return self.generated.call(request);
        }
        let read = Read(Arc::clone(&self.store));
        let max = self.max_request_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(read, request).await)
        })
    }
}

/// The `GetOnlineFeatures` handler.
struct Read(Arc<FeatureStore>);

impl tonic::server::UnaryService<wire::GetOnlineFeaturesRequest> for Read {
    type Response = Encoded;
    type Future = BoxFuture<tonic::Response<Encoded>, Status>;

    fn call(&mut self, request: tonic::Request<wire::GetOnlineFeaturesRequest>) -> Self::Future {
        let store = Arc::clone(&self.0);
        Box::pin(async move { get_online_features(&store, request).await })
    }
}

/// `GetOnlineFeaturesRequest` with its `FeatureList` left encoded: a list's plan is found
/// by its bytes ([`EncodedRefs`]), so the 50 names of a 50-feature read are not decoded into
/// 50 strings on every request. Same tags and wire types as `quiver.v1`'s message (the
/// `features` oneof as its two fields; the tests decode prost's encoding of it).
pub(crate) mod wire {
    use crate::proto::quiver::v1 as pb;

    /// The request as decoded here.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct GetOnlineFeaturesRequest {
        /// The `FeatureList` message, each time it occurs (several merge into one list).
        #[prost(bytes = "bytes", repeated, tag = "1")]
        pub(crate) feature_refs: Vec<bytes::Bytes>,
        /// A feature service.
        #[prost(string, optional, tag = "2")]
        pub(crate) feature_service: Option<String>,
        /// Entity rows, column by column.
        #[prost(message, repeated, tag = "3")]
        pub(crate) entities: Vec<pb::Column>,
        /// Name outputs `view__feature`.
        #[prost(bool, tag = "4")]
        pub(crate) full_feature_names: bool,
    }
}

/// `r` as [`get_online_features`] takes it.
pub(crate) fn wire_request(
    r: &pb::GetOnlineFeaturesRequest,
) -> Result<wire::GetOnlineFeaturesRequest, Status> {
    wire::GetOnlineFeaturesRequest::decode(r.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("cannot re-decode a request: {e}")))
}

/// The name of the encoding of [`FeatureSpec::EncodedRefs`] sent here.
const FEATURE_LIST: &str = "quiver.v1.FeatureList";

/// The references of an encoded `FeatureList`.
fn decode_feature_list(bytes: &[u8]) -> quiver_ops::Result<Vec<String>> {
    pb::FeatureList::decode(bytes)
        .map(|l| l.refs)
        .map_err(|e| OpsError::InvalidRequest(format!("malformed FeatureList message: {e}")))
}

/// The features `r` names.
fn feature_spec(r: &mut wire::GetOnlineFeaturesRequest) -> Result<FeatureSpec, Status> {
    let refs = std::mem::take(&mut r.feature_refs);
    match (refs.len(), r.feature_service.take()) {
        (0, Some(service)) => Ok(FeatureSpec::Service(service)),
        (0, None) => Err(Status::invalid_argument(
            "set feature_refs or feature_service",
        )),
        (_, Some(_)) => Err(Status::invalid_argument(
            "set feature_refs or feature_service, not both",
        )),
        (n, None) => {
            // A message field sent more than once is one message: the parts concatenated.
            let bytes = if n == 1 {
                refs.into_iter().next().unwrap_or_default()
            } else {
                refs.concat().into()
            };
            Ok(FeatureSpec::EncodedRefs(EncodedRefs {
                encoding: FEATURE_LIST,
                bytes,
                decode: decode_feature_list,
            }))
        }
    }
}

/// Answers `request` as the encoded `GetOnlineFeaturesResponse`.
pub(crate) async fn get_online_features(
    store: &FeatureStore,
    request: tonic::Request<wire::GetOnlineFeaturesRequest>,
) -> Result<tonic::Response<Encoded>, Status> {
    let caller = caller_of(request.extensions());
    let request_id = request_id_of(request.extensions());
    let mut r = request.into_inner();
    let spec = feature_spec(&mut r)?;
    let entities = crate::grpc::columns(store, &r.entities)?;
    let bytes = store
        .read_online(
            &caller,
            &request_id,
            spec,
            r.full_feature_names,
            &entities,
            |snapshot, read| encode_response(snapshot.version, read),
        )
        .await
        .map_err(|e| status(&e))?;
    Ok(tonic::Response::new(Encoded(bytes)))
}

/// A message already in protobuf bytes.
pub(crate) struct Encoded(pub(crate) Vec<u8>);

/// Writes [`Encoded`] messages as they are; decodes requests as [`crate::codec::Codec`] does.
struct EncodedCodec;

struct EncodedEncoder;

impl tonic::codec::Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl tonic::codec::Codec for EncodedCodec {
    type Encode = Encoded;
    type Decode = wire::GetOnlineFeaturesRequest;
    type Encoder = EncodedEncoder;
    type Decoder = Decoder<wire::GetOnlineFeaturesRequest>;

    fn encoder(&mut self) -> EncodedEncoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder::default()
    }
}

/// The status's number in `quiver.v1.FieldStatus`.
fn status_number(s: FieldStatus) -> i32 {
    (match s {
        FieldStatus::Present => pb::FieldStatus::Present,
        FieldStatus::NullValue => pb::FieldStatus::NullValue,
        FieldStatus::NotFound => pb::FieldStatus::NotFound,
        FieldStatus::OutsideMaxAge => pb::FieldStatus::OutsideMaxAge,
    }) as i32
}

/// The event time of a cell as sent: µs, 0 when no row was found.
fn event_micros(cell: &Cell<'_>) -> i64 {
    cell.event_ts.map_or(0, |t| t.div_euclid(1_000))
}

/// `GetOnlineFeaturesResponse { registry_version, row_count, features }` of `read`, in
/// prost's encoding.
pub(crate) fn encode_response(
    registry_version: u64,
    read: &OnlineFeatures<'_>,
) -> quiver_ops::Result<Vec<u8>> {
    let rows = read.num_rows();
    let features = read.features();
    // A first guess: names plus about a dozen bytes per cell.
    let mut out = Vec::with_capacity(16 + features.len() * (24 + 16 * rows));
    if registry_version != 0 {
        key(1, WireType::Varint, &mut out);
        varint(registry_version, &mut out);
    }
    let row_count = u32::try_from(rows).unwrap_or(u32::MAX);
    if row_count != 0 {
        key(2, WireType::Varint, &mut out);
        varint(u64::from(row_count), &mut out);
    }
    let mut cells = Vec::with_capacity(rows);
    for (col, feature) in features.iter().enumerate() {
        cells.clear();
        for row in 0..rows {
            cells.push(read.cell(col, row)?);
        }
        key(3, WireType::LengthDelimited, &mut out);
        encode_column(&feature.output_name, &cells, &mut out);
    }
    Ok(out)
}

/// A length-delimited `FeatureColumn` (length prefix included).
fn encode_column(name: &str, cells: &[Cell<'_>], out: &mut Vec<u8>) {
    let statuses: usize = cells
        .iter()
        .map(|c| encoded_len_varint(status_number(c.status) as u64))
        .sum();
    let times: usize = cells
        .iter()
        .map(|c| encoded_len_varint(event_micros(c) as u64))
        .sum();
    let values: usize = cells
        .iter()
        .map(|c| delimited_len(value_len(&c.value)))
        .sum();
    let len = omitted_if_empty_len(name.len())
        + values
        + omitted_if_empty_len(statuses)
        + omitted_if_empty_len(times);
    varint(len as u64, out);
    if !name.is_empty() {
        key(1, WireType::LengthDelimited, out);
        varint(name.len() as u64, out);
        out.put_slice(name.as_bytes());
    }
    for c in cells {
        key(2, WireType::LengthDelimited, out);
        encode_value(&c.value, out);
    }
    if !cells.is_empty() {
        key(3, WireType::LengthDelimited, out);
        varint(statuses as u64, out);
        for c in cells {
            varint(status_number(c.status) as u64, out);
        }
        key(5, WireType::LengthDelimited, out);
        varint(times as u64, out);
        for c in cells {
            varint(event_micros(c) as u64, out);
        }
    }
}

/// The key of field `tag` (below 16 in these messages: one byte).
#[inline]
fn key(tag: u8, wire_type: WireType, out: &mut Vec<u8>) {
    debug_assert!(tag < 16, "field {tag} needs a longer key");
    out.push((tag << 3) | wire_type as u8);
}

/// A varint; most values written here (lengths, statuses) take one byte.
#[inline]
fn varint(v: u64, out: &mut Vec<u8>) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        prost::encoding::encode_varint(v, out);
    }
}

/// Bytes of a length-delimited field of `len` bytes after its one-byte key.
fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A proto3 string field or packed repeated field (one-byte key) of `len` bytes: absent when
/// empty.
fn omitted_if_empty_len(len: usize) -> usize {
    if len == 0 { 0 } else { delimited_len(len) }
}

/// Encoded length of the `Value` message of `v` (without its own key and length).
fn value_len(v: &FeatureValue<'_>) -> usize {
    match v {
        FeatureValue::Null => 0,
        FeatureValue::Bool(_) => 2,
        // int32 is sign-extended to 64 bits on the wire, as prost does.
        FeatureValue::Int32(i) => 1 + encoded_len_varint(i64::from(*i) as u64),
        FeatureValue::Int64(i) | FeatureValue::Timestamp(i) => 1 + encoded_len_varint(*i as u64),
        FeatureValue::Float32(_) => 5,
        FeatureValue::Float64(_) => 9,
        FeatureValue::String(s) => delimited_len(s.len()),
        FeatureValue::Bytes(b) => delimited_len(b.len()),
        FeatureValue::List(items) => delimited_len(list_len(items)),
    }
}

/// Encoded length of the `ValueList` of `items`.
fn list_len(items: &[FeatureValue<'_>]) -> usize {
    items.iter().map(|v| delimited_len(value_len(v))).sum()
}

/// A length-delimited `Value` (length prefix included).
fn encode_value(v: &FeatureValue<'_>, out: &mut Vec<u8>) {
    varint(value_len(v) as u64, out);
    match v {
        FeatureValue::Null => {}
        FeatureValue::Bool(b) => {
            key(1, WireType::Varint, out);
            out.put_u8(u8::from(*b));
        }
        FeatureValue::Int32(i) => {
            key(2, WireType::Varint, out);
            varint(i64::from(*i) as u64, out);
        }
        FeatureValue::Int64(i) => {
            key(3, WireType::Varint, out);
            varint(*i as u64, out);
        }
        FeatureValue::Float32(f) => {
            key(4, WireType::ThirtyTwoBit, out);
            out.put_f32_le(*f);
        }
        FeatureValue::Float64(f) => {
            key(5, WireType::SixtyFourBit, out);
            out.put_f64_le(*f);
        }
        FeatureValue::String(s) => {
            key(6, WireType::LengthDelimited, out);
            varint(s.len() as u64, out);
            out.put_slice(s.as_bytes());
        }
        FeatureValue::Bytes(b) => {
            key(7, WireType::LengthDelimited, out);
            varint(b.len() as u64, out);
            out.put_slice(b);
        }
        FeatureValue::Timestamp(t) => {
            key(8, WireType::Varint, out);
            varint(*t as u64, out);
        }
        FeatureValue::List(items) => {
            key(9, WireType::LengthDelimited, out);
            varint(list_len(items) as u64, out);
            for item in items {
                key(1, WireType::LengthDelimited, out);
                encode_value(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use quiver_core::{
        Definitions, FeatureRef, KeyValue, ScalarType, ValueType, encode_entity_key,
    };
    use quiver_online::{
        OnlineStore, ReadPlan, RocksDbOptions, RocksDbStore, ViewId, ViewRows, encode_row,
        read_online_features,
    };

    /// The features the handler reads for a request as prost encodes it.
    fn spec_of(r: &pb::GetOnlineFeaturesRequest) -> Result<FeatureSpec, Status> {
        let mut wire = wire::GetOnlineFeaturesRequest::decode(r.encode_to_vec().as_slice())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let decoded = (wire.entities.clone(), wire.full_feature_names);
        assert_eq!(decoded, (r.entities.clone(), r.full_feature_names));
        feature_spec(&mut wire)
    }

    fn decoded_refs(spec: &FeatureSpec) -> Vec<String> {
        match spec {
            FeatureSpec::EncodedRefs(e) => (e.decode)(&e.bytes).unwrap(),
            other => panic!("not encoded references: {other:?}"),
        }
    }

    #[test]
    fn requests_decode_as_the_message_does() {
        use pb::get_online_features_request::Features;
        let refs = vec!["stats:f0".to_owned(), "stats:*".to_owned()];
        let column = pb::Column {
            name: "driver_id".into(),
            values: vec![pb::Value {
                kind: Some(pb::value::Kind::Int64Value(7)),
            }],
        };
        let request = pb::GetOnlineFeaturesRequest {
            features: Some(Features::FeatureRefs(pb::FeatureList {
                refs: refs.clone(),
            })),
            entities: vec![column.clone(); 2],
            full_feature_names: true,
        };
        let spec = spec_of(&request).unwrap();
        assert_eq!(decoded_refs(&spec), refs);
        // Equal lists are equal keys; another list is another key.
        assert_eq!(spec, spec_of(&request).unwrap());
        let other = pb::GetOnlineFeaturesRequest {
            features: Some(Features::FeatureRefs(pb::FeatureList {
                refs: vec!["stats:f0".into()],
            })),
            ..request.clone()
        };
        assert_ne!(spec, spec_of(&other).unwrap());

        let service = pb::GetOnlineFeaturesRequest {
            features: Some(Features::FeatureService("svc".into())),
            ..request.clone()
        };
        assert_eq!(
            spec_of(&service).unwrap(),
            FeatureSpec::Service("svc".into())
        );
        let none = pb::GetOnlineFeaturesRequest {
            features: None,
            ..request.clone()
        };
        assert_eq!(
            spec_of(&none).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );

        // A message field sent twice is one merged message, as prost decodes it.
        let mut twice = pb::FeatureList {
            refs: vec!["a:x".into()],
        }
        .encode_to_vec();
        twice.splice(0..0, [0x0a, u8::try_from(twice.len()).unwrap()]);
        let once = twice.clone();
        twice.extend_from_slice(&once);
        let merged = pb::GetOnlineFeaturesRequest::decode(twice.as_slice()).unwrap();
        let mut wire = wire::GetOnlineFeaturesRequest::decode(twice.as_slice()).unwrap();
        let Some(Features::FeatureRefs(list)) = merged.features else {
            panic!("refs");
        };
        assert_eq!(decoded_refs(&feature_spec(&mut wire).unwrap()), list.refs);
        assert_eq!(list.refs.len(), 2);

        // Malformed names are the caller's error, found when the list is first planned.
        let bad = [0x0a, 0x03, 0x0a, 0x01, 0xff];
        let mut wire = wire::GetOnlineFeaturesRequest::decode(bad.as_slice()).unwrap();
        let FeatureSpec::EncodedRefs(e) = feature_spec(&mut wire).unwrap() else {
            panic!("refs");
        };
        let err = (e.decode)(&e.bytes).unwrap_err();
        assert!(matches!(err, OpsError::InvalidRequest(_)), "{err}");
    }

    /// The response as the handler built it before it was encoded here: the reference.
    fn message(registry_version: u64, read: &OnlineFeatures<'_>) -> pb::GetOnlineFeaturesResponse {
        let rows = read.num_rows();
        let features = read
            .features()
            .iter()
            .enumerate()
            .map(|(col, f)| {
                let cells: Vec<Cell<'_>> =
                    (0..rows).map(|row| read.cell(col, row).unwrap()).collect();
                pb::FeatureColumn {
                    name: f.output_name.clone(),
                    values: cells.iter().map(|c| value(&c.value)).collect(),
                    statuses: cells.iter().map(|c| status_number(c.status)).collect(),
                    event_timestamps_micros: cells.iter().map(event_micros).collect(),
                }
            })
            .collect();
        pb::GetOnlineFeaturesResponse {
            registry_version,
            row_count: u32::try_from(rows).unwrap(),
            features,
        }
    }

    fn value(v: &FeatureValue<'_>) -> pb::Value {
        use pb::value::Kind as K;
        let kind = match v {
            FeatureValue::Null => None,
            FeatureValue::Bool(b) => Some(K::BoolValue(*b)),
            FeatureValue::Int32(i) => Some(K::Int32Value(*i)),
            FeatureValue::Int64(i) => Some(K::Int64Value(*i)),
            FeatureValue::Float32(f) => Some(K::FloatValue(*f)),
            FeatureValue::Float64(f) => Some(K::DoubleValue(*f)),
            FeatureValue::String(s) => Some(K::StringValue((*s).to_owned())),
            FeatureValue::Bytes(b) => Some(K::BytesValue(b.to_vec())),
            FeatureValue::Timestamp(t) => Some(K::TimestampMicros(*t)),
            FeatureValue::List(items) => Some(K::ListValue(pb::ValueList {
                values: items.iter().map(value).collect(),
            })),
        };
        pb::Value { kind }
    }

    /// xorshift64*: deterministic, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Past 127 bytes a length takes two varint bytes.
    const LONG: &str = "a string long enough that its length prefix needs two varint bytes: \
        0123456789 0123456789 0123456789 0123456789 0123456789 0123456789 0123456789";
    const TEXTS: [&str; 4] = ["", "x", "ünïcödé", LONG];

    fn scalar(t: ScalarType, rng: &mut Rng) -> FeatureValue<'static> {
        let int = |rng: &mut Rng| match rng.below(5) {
            0 => 0,
            1 => -1,
            2 => i64::MIN,
            3 => i64::MAX,
            _ => rng.next() as i64 >> rng.below(64),
        };
        let text = |rng: &mut Rng| TEXTS[rng.below(4) as usize];
        match t {
            ScalarType::Bool => FeatureValue::Bool(rng.below(2) == 0),
            ScalarType::Int32 => FeatureValue::Int32(int(rng) as i32),
            ScalarType::Int64 => FeatureValue::Int64(int(rng)),
            ScalarType::Float32 => FeatureValue::Float32(f32::from_bits(rng.next() as u32)),
            ScalarType::Float64 => FeatureValue::Float64(f64::from_bits(rng.next())),
            ScalarType::String => FeatureValue::String(text(rng)),
            ScalarType::Bytes => FeatureValue::Bytes(text(rng).as_bytes()),
            ScalarType::Timestamp => FeatureValue::Timestamp(int(rng)),
        }
    }

    fn random_value(t: ValueType, rng: &mut Rng) -> FeatureValue<'static> {
        if rng.below(5) == 0 {
            return FeatureValue::Null;
        }
        match t {
            ValueType::Scalar(s) => scalar(s, rng),
            ValueType::List(s) => {
                FeatureValue::List((0..rng.below(4)).map(|_| scalar(s, rng)).collect())
            }
        }
    }

    fn definitions() -> Definitions {
        let features: Vec<_> = ScalarType::ALL
            .into_iter()
            .flat_map(|s| [ValueType::Scalar(s), ValueType::List(s)])
            .enumerate()
            .map(|(i, t)| serde_json::json!({"name": format!("f{i}"), "type": t.to_string()}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "project": "p",
            "entities": {"driver": {
                "name": "driver",
                "join_keys": [{"name": "driver_id", "type": "int64"}],
            }},
            "feature_views": {"v": {
                "name": "v",
                "entities": ["driver"],
                "source": "s",
                "features": features,
                "ttl": "1h",
                "online": true,
                "offline": true,
            }},
        }))
        .unwrap()
    }

    /// Random rows of every value type (nulls, lists, extreme integers, long strings), some
    /// keys missing and some rows outside the ttl: every status and every `Value` kind.
    #[test]
    fn the_encoding_is_prosts_byte_for_byte() {
        let defs = definitions();
        let view = defs.view("v").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = RocksDbStore::open(dir.path(), &RocksDbOptions::default()).unwrap();
        let id = ViewId::new("p", "v", 1);
        let keys = defs.join_keys(view).unwrap();
        let now = 1_800_000_000_000_000_000_i64;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut rows = Vec::new();
        for driver in 0..200_i64 {
            if rng.below(4) == 0 {
                continue;
            }
            let values: Vec<_> = view
                .features
                .iter()
                .map(|f| random_value(f.value_type, &mut rng))
                .collect();
            let age = if rng.below(3) == 0 { 7_200 } else { 60 } * 1_000_000_000;
            let key = encode_entity_key(&keys, [("driver_id", &KeyValue::Int(driver))]).unwrap();
            let row = encode_row(&view.features, (now - age - driver, i64::MIN, 0), &values);
            rows.push((key, row));
        }
        store
            .write(
                &[ViewRows {
                    view: &id,
                    rows: &rows,
                }],
                false,
            )
            .unwrap();
        let generations = [("v".to_owned(), 1)].into();
        let refs: Vec<FeatureRef> = view
            .features
            .iter()
            .map(|f| FeatureRef::parse(&format!("v:{}", f.name)).unwrap())
            .collect();
        for (n, full_names, version) in [
            (0, false, 1),
            (1, false, 0),
            (7, true, 42),
            (200, false, u64::MAX),
        ] {
            let features = defs.resolve(&refs, full_names).unwrap();
            let plan = ReadPlan::new(&defs, &generations, features).unwrap();
            let drivers = (0..n)
                .map(|_| KeyValue::Int(rng.below(220) as i64))
                .collect();
            let entities = [("driver_id".to_owned(), drivers)];
            let read =
                futures::executor::block_on(read_online_features(&store, &plan, &entities, now))
                    .unwrap();
            let ours = encode_response(version, &read).unwrap();
            let reference = message(version, &read);
            assert_eq!(ours, reference.encode_to_vec(), "{n} rows");
            // Decodes to the same message (compared re-encoded: NaN is not equal to itself).
            let decoded = pb::GetOnlineFeaturesResponse::decode(ours.as_slice()).unwrap();
            assert_eq!(decoded.encode_to_vec(), ours);
            if n == 200 {
                let statuses: std::collections::BTreeSet<i32> = reference
                    .features
                    .iter()
                    .flat_map(|c| c.statuses.iter().copied())
                    .collect();
                assert_eq!(statuses.len(), 4, "every status is answered: {statuses:?}");
            }
        }
    }
}
