//! Feast's online protocols: `feast.serving.ServingService` over gRPC and the JSON endpoints of
//! `feast serve` over HTTP (`/get-online-features`, `/push`, `/write-to-online-store`,
//! `/health`), answered by the same [`Online`] core as Quiver's own API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use quiver_core::{
    ErrorKind, HasKind, ScalarType, TimestampUnit, ValueType, format_nanos, now_nanos,
    parse_time_nanos,
};
use quiver_online::{FeatureValue, FieldStatus, OnlineFeatures, Window};
use quiver_ops::{
    Caller, FeatureSpec, FeatureStore, InputValue, Limits, MaterializeRequest, OpsError,
    PushRequest, PushTarget,
};

use crate::gate::{caller_of, request_id_of};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tonic::{Request, Response, Status};

use crate::error::{http_status, status};
use crate::grpc::{blocking, timestamp};
use crate::proto::feast::serving as fs;
use crate::proto::feast::types as ft;

/// The version reported by `GetFeastServingInfo`.
const SERVING_VERSION: &str = concat!("quiver ", env!("CARGO_PKG_VERSION"));

/// `feast.serving.ServingService`.
pub struct FeastServing {
    store: Arc<FeatureStore>,
}

impl FeastServing {
    /// Serves Feast's gRPC clients from `store`.
    pub fn new(store: Arc<FeatureStore>) -> Self {
        Self { store }
    }
}

fn input(v: &ft::Value) -> InputValue {
    use ft::value::Val as V;
    let seconds = |s: i64| InputValue::Timestamp(s.saturating_mul(1_000_000_000));
    let list = |items: Vec<InputValue>| InputValue::List(items);
    match &v.val {
        None | Some(V::NullVal(_)) => InputValue::Null,
        Some(V::BytesVal(b)) => InputValue::Bytes(b.clone()),
        Some(V::StringVal(s) | V::JsonVal(s)) => InputValue::String(s.clone()),
        Some(V::Int32Val(i)) => InputValue::Int(i64::from(*i)),
        Some(V::Int64Val(i)) => InputValue::Int(*i),
        Some(V::DoubleVal(f)) => InputValue::Float(*f),
        Some(V::FloatVal(f)) => InputValue::Float(f64::from(*f)),
        Some(V::BoolVal(b)) => InputValue::Bool(*b),
        Some(V::UnixTimestampVal(s)) => seconds(*s),
        Some(V::BytesListVal(l)) => list(l.val.iter().cloned().map(InputValue::Bytes).collect()),
        Some(V::StringListVal(l)) => list(l.val.iter().cloned().map(InputValue::String).collect()),
        Some(V::Int32ListVal(l)) => list(
            l.val
                .iter()
                .map(|i| InputValue::Int(i64::from(*i)))
                .collect(),
        ),
        Some(V::Int64ListVal(l)) => list(l.val.iter().map(|i| InputValue::Int(*i)).collect()),
        Some(V::DoubleListVal(l)) => list(l.val.iter().map(|f| InputValue::Float(*f)).collect()),
        Some(V::FloatListVal(l)) => list(
            l.val
                .iter()
                .map(|f| InputValue::Float(f64::from(*f)))
                .collect(),
        ),
        Some(V::BoolListVal(l)) => list(l.val.iter().map(|b| InputValue::Bool(*b)).collect()),
        Some(V::UnixTimestampListVal(l)) => list(l.val.iter().map(|s| seconds(*s)).collect()),
    }
}

fn scalar_value(v: &FeatureValue<'_>) -> Option<ft::value::Val> {
    use ft::value::Val as V;
    Some(match v {
        FeatureValue::Null | FeatureValue::List(_) => return None,
        FeatureValue::Bool(b) => V::BoolVal(*b),
        FeatureValue::Int32(i) => V::Int32Val(*i),
        FeatureValue::Int64(i) => V::Int64Val(*i),
        FeatureValue::Float32(f) => V::FloatVal(*f),
        FeatureValue::Float64(f) => V::DoubleVal(*f),
        FeatureValue::String(s) => V::StringVal((*s).to_owned()),
        FeatureValue::Bytes(b) => V::BytesVal(b.to_vec()),
        FeatureValue::Timestamp(us) => V::UnixTimestampVal(us.div_euclid(1_000_000)),
    })
}

/// A feature value as a Feast `Value` of the feature's declared type.
fn feast_value(t: ValueType, v: &FeatureValue<'_>) -> ft::Value {
    use ft::value::Val as V;
    let val = match (t, v) {
        (ValueType::List(s), FeatureValue::List(items)) => {
            macro_rules! list {
                ($variant:ident, $list:ident, $pat:pat => $e:expr) => {
                    V::$variant(ft::$list {
                        val: items
                            .iter()
                            .filter_map(|i| match i {
                                $pat => Some($e),
                                _ => None,
                            })
                            .collect(),
                    })
                };
            }
            Some(match s {
                ScalarType::Bool => list!(BoolListVal, BoolList, FeatureValue::Bool(b) => *b),
                ScalarType::Int32 => list!(Int32ListVal, Int32List, FeatureValue::Int32(x) => *x),
                ScalarType::Int64 => list!(Int64ListVal, Int64List, FeatureValue::Int64(x) => *x),
                ScalarType::Float32 => {
                    list!(FloatListVal, FloatList, FeatureValue::Float32(x) => *x)
                }
                ScalarType::Float64 => {
                    list!(DoubleListVal, DoubleList, FeatureValue::Float64(x) => *x)
                }
                ScalarType::String => {
                    list!(StringListVal, StringList, FeatureValue::String(x) => (*x).to_owned())
                }
                ScalarType::Bytes => {
                    list!(BytesListVal, BytesList, FeatureValue::Bytes(x) => x.to_vec())
                }
                ScalarType::Timestamp => {
                    list!(UnixTimestampListVal, Int64List, FeatureValue::Timestamp(x) => x.div_euclid(1_000_000))
                }
            })
        }
        _ => scalar_value(v),
    };
    ft::Value { val }
}

fn feast_status(s: FieldStatus) -> fs::FieldStatus {
    match s {
        FieldStatus::Present => fs::FieldStatus::Present,
        FieldStatus::NullValue => fs::FieldStatus::NullValue,
        FieldStatus::NotFound => fs::FieldStatus::NotFound,
        FieldStatus::OutsideMaxAge => fs::FieldStatus::OutsideMaxAge,
    }
}

fn status_name(s: FieldStatus) -> &'static str {
    match s {
        FieldStatus::Present => "PRESENT",
        FieldStatus::NullValue => "NULL_VALUE",
        FieldStatus::NotFound => "NOT_FOUND",
        FieldStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
    }
}

#[tonic::async_trait]
impl fs::serving_service_server::ServingService for FeastServing {
    async fn get_feast_serving_info(
        &self,
        _request: Request<fs::GetFeastServingInfoRequest>,
    ) -> Result<Response<fs::GetFeastServingInfoResponse>, Status> {
        Ok(Response::new(fs::GetFeastServingInfoResponse {
            version: SERVING_VERSION.into(),
        }))
    }

    async fn get_online_features(
        &self,
        request: Request<fs::GetOnlineFeaturesRequest>,
    ) -> Result<Response<fs::GetOnlineFeaturesResponse>, Status> {
        let caller = caller_of(request.extensions());
        let request_id = request_id_of(request.extensions());
        let r = request.into_inner();
        let spec = match r.kind {
            Some(fs::get_online_features_request::Kind::Features(l)) => FeatureSpec::Refs(l.val),
            Some(fs::get_online_features_request::Kind::FeatureService(s)) => {
                FeatureSpec::Service(s)
            }
            None => return Err(Status::invalid_argument("set features or feature_service")),
        };
        // Protobuf maps have no order: join keys come back sorted by name.
        let mut entities: Vec<(String, Vec<ft::Value>)> =
            r.entities.into_iter().map(|(k, v)| (k, v.val)).collect();
        entities.sort_by(|a, b| a.0.cmp(&b.0));
        self.store
            .options()
            .limits
            .check_rows(entities.iter().map(|(k, v)| (k.as_str(), v.len())))
            .map_err(|e| status(&e))?;
        let columns: Vec<(String, Vec<InputValue>)> = entities
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(input).collect()))
            .collect();
        let response = self
            .store
            .read_online(
                &caller,
                &request_id,
                spec,
                r.full_feature_names,
                &columns,
                |_, read| {
                    let mut names: Vec<String> = entities.iter().map(|(k, _)| k.clone()).collect();
                    let mut results: Vec<fs::get_online_features_response::FeatureVector> =
                        entities
                            .iter()
                            .map(
                                |(_, values)| fs::get_online_features_response::FeatureVector {
                                    values: values.clone(),
                                    statuses: vec![fs::FieldStatus::Present as i32; values.len()],
                                    event_timestamps: vec![
                                        prost_types::Timestamp::default();
                                        values.len()
                                    ],
                                },
                            )
                            .collect();
                    for (col, f) in read.features().iter().enumerate() {
                        names.push(f.output_name.clone());
                        let mut vector = fs::get_online_features_response::FeatureVector::default();
                        for row in 0..read.num_rows() {
                            let cell = read.cell(col, row)?;
                            vector
                                .values
                                .push(feast_value(f.feature.value_type, &cell.value));
                            vector.statuses.push(feast_status(cell.status) as i32);
                            vector
                                .event_timestamps
                                .push(cell.event_ts.map_or_else(Default::default, timestamp));
                        }
                        results.push(vector);
                    }
                    Ok(fs::GetOnlineFeaturesResponse {
                        metadata: Some(fs::GetOnlineFeaturesResponseMetadata {
                            feature_names: Some(fs::FeatureList { val: names }),
                            feature_view_metadata: Vec::new(),
                        }),
                        results,
                        status: true,
                    })
                },
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(response))
    }
}

/// Feast's HTTP feature server endpoints.
pub fn http_router(store: Arc<FeatureStore>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/get-online-features", post(get_online_features))
        .route("/push", post(push))
        .route("/write-to-online-store", post(write_to_online_store))
        .route("/materialize", post(materialize))
        .route("/materialize-incremental", post(materialize_incremental))
        .with_state(store)
}

/// An error as Feast's server answers it: an HTTP status and `{"detail": message}`.
#[derive(Debug)]
struct HttpError {
    kind: ErrorKind,
    message: String,
}

impl From<OpsError> for HttpError {
    fn from(e: OpsError) -> Self {
        Self {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<Status> for HttpError {
    fn from(s: Status) -> Self {
        Self {
            kind: crate::error::kind_of_code(s.code()),
            message: s.message().to_owned(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> HttpResponse {
        (
            http_status(self.kind),
            axum::Json(json!({"detail": self.message})),
        )
            .into_response()
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError {
        kind: ErrorKind::InvalidArgument,
        message: message.into(),
    }
}

/// Parses a JSON request body into `T`; malformed JSON and a body of the wrong shape are
/// both 400s that say which.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            bad(format!("malformed JSON: {e}"))
        }
        _ => bad(format!("invalid request: {e}")),
    })
}

/// `{"column": [values...]}`: columns in the object's order; a column given twice is an
/// error (JSON parsers keep the last silently).
#[derive(Debug, Default)]
struct Columns(Vec<(String, Vec<Json>)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of columns, each a list of values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Columns, A::Error> {
                let mut columns: Vec<(String, Vec<Json>)> = Vec::new();
                while let Some((name, values)) = map.next_entry::<String, Vec<Json>>()? {
                    if columns.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "column '{name}' is given twice"
                        )));
                    }
                    columns.push((name, values));
                }
                Ok(Columns(columns))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl Columns {
    /// The columns as protocol-neutral values, once every column's length is within the
    /// row limit.
    fn inputs(&self, limits: &Limits) -> Result<Vec<(String, Vec<InputValue>)>, OpsError> {
        limits.check_rows(self.0.iter().map(|(k, v)| (k.as_str(), v.len())))?;
        Ok(self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(json_input).collect()))
            .collect())
    }
}

fn json_input(v: &Json) -> InputValue {
    match v {
        Json::Null => InputValue::Null,
        Json::Bool(b) => InputValue::Bool(*b),
        Json::Number(n) => n.as_i64().map_or_else(
            || InputValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            InputValue::Int,
        ),
        Json::String(s) => InputValue::String(s.clone()),
        Json::Array(items) => InputValue::List(items.iter().map(json_input).collect()),
        Json::Object(_) => InputValue::String(v.to_string()),
    }
}

/// A feature value as Feast's HTTP server writes it.
struct JsonCell<'v, 'a>(&'v FeatureValue<'a>);

impl serde::Serialize for JsonCell<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            FeatureValue::Null => s.serialize_unit(),
            FeatureValue::Bool(b) => s.serialize_bool(*b),
            FeatureValue::Int32(i) => s.serialize_i32(*i),
            FeatureValue::Int64(i) => s.serialize_i64(*i),
            // Non-finite floats are written as null.
            FeatureValue::Float32(f) => s.serialize_f64(f64::from(*f)),
            FeatureValue::Float64(f) => s.serialize_f64(*f),
            FeatureValue::String(v) => s.serialize_str(v),
            FeatureValue::Bytes(b) => s.collect_seq(b.iter()),
            FeatureValue::Timestamp(us) => s.serialize_str(&format_nanos(us.saturating_mul(1_000))),
            FeatureValue::List(items) => s.collect_seq(items.iter().map(JsonCell)),
        }
    }
}

/// Feast's answer to `/get-online-features`, serialized straight from the read.
#[derive(serde::Serialize)]
struct OnlineAnswer<'a> {
    metadata: Metadata<'a>,
    results: Vec<FeatureVector<'a>>,
}

#[derive(serde::Serialize)]
struct Metadata<'a> {
    feature_names: Vec<&'a str>,
}

#[derive(serde::Serialize)]
struct FeatureVector<'a> {
    values: Values<'a>,
    statuses: Vec<&'static str>,
    event_timestamps: Vec<&'a str>,
}

/// Join-key columns echo the request's values; feature columns are read cells.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Values<'a> {
    Request(&'a [Json]),
    Read(Vec<JsonCell<'a, 'a>>),
}

/// The JSON text of Feast's answer to `/get-online-features`.
fn features_json(read: &OnlineFeatures<'_>, keys: &Columns) -> Result<Vec<u8>, OpsError> {
    const EPOCH: &str = "1970-01-01T00:00:00Z";
    let rows = read.num_rows();
    let cells = (0..read.features().len())
        .map(|col| {
            (0..rows)
                .map(|row| read.cell(col, row).map_err(OpsError::from))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Rows of one view share their event time: format each distinct time once.
    let mut times: HashMap<i64, String> = HashMap::new();
    for cell in cells.iter().flatten() {
        if let Some(t) = cell.event_ts {
            times.entry(t).or_insert_with(|| format_nanos(t));
        }
    }
    let mut results: Vec<FeatureVector<'_>> = keys
        .0
        .iter()
        .map(|(_, values)| FeatureVector {
            values: Values::Request(values),
            statuses: vec!["PRESENT"; values.len()],
            event_timestamps: vec![EPOCH; values.len()],
        })
        .collect();
    for column in &cells {
        results.push(FeatureVector {
            values: Values::Read(column.iter().map(|c| JsonCell(&c.value)).collect()),
            statuses: column.iter().map(|c| status_name(c.status)).collect(),
            event_timestamps: column
                .iter()
                .map(|c| {
                    c.event_ts
                        .and_then(|t| times.get(&t))
                        .map_or(EPOCH, String::as_str)
                })
                .collect(),
        });
    }
    let answer = OnlineAnswer {
        metadata: Metadata {
            feature_names: keys
                .0
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(read.features().iter().map(|f| f.output_name.as_str()))
                .collect(),
        },
        results,
    };
    serde_json::to_vec(&answer).map_err(|e| OpsError::Internal(e.to_string()))
}

/// The body of `/get-online-features`.
#[derive(Deserialize)]
struct ReadBody {
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    feature_service: Option<String>,
    #[serde(default)]
    entities: Columns,
    #[serde(default)]
    full_feature_names: bool,
}

async fn get_online_features(
    State(store): State<Arc<FeatureStore>>,
    caller: HttpCaller,
    body: Bytes,
) -> Result<HttpResponse, HttpError> {
    let body: ReadBody = parse_body(&body)?;
    let spec = match (body.features, body.feature_service) {
        (Some(list), None) => FeatureSpec::Refs(list),
        (None, Some(s)) => FeatureSpec::Service(s),
        _ => {
            return Err(bad(
                "give exactly one of \"features\" (a list) and \"feature_service\" (a name)",
            ));
        }
    };
    let entities = body.entities.inputs(&store.options().limits)?;
    let answer = store
        .read_online(
            &caller.0,
            &caller.1,
            spec,
            body.full_feature_names,
            &entities,
            |_, read| features_json(read, &body.entities),
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

/// The caller of an HTTP request (see [`caller_of`]) and the request's id.
struct HttpCaller(Caller, String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HttpCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            caller_of(&parts.extensions),
            request_id_of(&parts.extensions),
        ))
    }
}

/// The body of `/push` and `/write-to-online-store`.
#[derive(Deserialize)]
struct PushBody {
    #[serde(default)]
    push_source_name: Option<String>,
    #[serde(default)]
    feature_view_name: Option<String>,
    df: Columns,
    #[serde(default)]
    to: Option<String>,
    /// The unit of integer times: `s`, `ms`, `us` or `ns`.
    #[serde(default)]
    timestamp_unit: Option<String>,
}

impl PushBody {
    fn request(
        self,
        name: String,
        to: PushTarget,
        limits: &Limits,
    ) -> Result<PushRequest, HttpError> {
        let timestamp_unit = self
            .timestamp_unit
            .as_deref()
            .map(str::parse::<TimestampUnit>)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        Ok(PushRequest {
            name,
            columns: self.df.inputs(limits)?,
            to,
            timestamp_unit,
        })
    }
}

async fn run_push(
    store: Arc<FeatureStore>,
    caller: HttpCaller,
    request: PushRequest,
) -> Result<axum::Json<Json>, HttpError> {
    let pushed = blocking(move || store.push(&caller.0, &request).map_err(|e| status(&e))).await?;
    Ok(axum::Json(
        json!({"status": "ok", "rows": pushed.rows, "feature_views": pushed.views}),
    ))
}

async fn push(
    State(store): State<Arc<FeatureStore>>,
    caller: HttpCaller,
    body: Bytes,
) -> Result<axum::Json<Json>, HttpError> {
    let mut body: PushBody = parse_body(&body)?;
    let name = body
        .push_source_name
        .take()
        .ok_or_else(|| bad("missing \"push_source_name\""))?;
    let to = match body.to.as_deref().unwrap_or("online") {
        "online" => PushTarget::Online,
        "offline" => PushTarget::Offline,
        "online_and_offline" => PushTarget::OnlineAndOffline,
        other => {
            return Err(bad(format!(
                "\"to\" must be online, offline or online_and_offline, not '{other}'"
            )));
        }
    };
    let request = body.request(name, to, &store.options().limits)?;
    run_push(store, caller, request).await
}

async fn write_to_online_store(
    State(store): State<Arc<FeatureStore>>,
    caller: HttpCaller,
    body: Bytes,
) -> Result<axum::Json<Json>, HttpError> {
    let mut body: PushBody = parse_body(&body)?;
    let view = body
        .feature_view_name
        .take()
        .ok_or_else(|| bad("missing \"feature_view_name\""))?;
    let request = body.request(view, PushTarget::Online, &store.options().limits)?;
    run_push(store, caller, request).await
}

/// The body of Feast's `/materialize` (what `feast materialize` posts when the online store is
/// remote): Quiver materializes its own online store, synchronously.
#[derive(Deserialize)]
struct MaterializeBody {
    #[serde(default)]
    start_ts: Option<String>,
    #[serde(default)]
    end_ts: Option<String>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
    /// Every row up to now, whatever its time.
    #[serde(default)]
    disable_event_timestamp: bool,
}

/// The body of Feast's `/materialize-incremental`.
#[derive(Deserialize)]
struct MaterializeIncrementalBody {
    end_ts: String,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
}

fn body_time(text: Option<&str>, field: &str) -> Result<i64, HttpError> {
    let text = text.ok_or_else(|| bad(format!("missing \"{field}\"")))?;
    parse_time_nanos(text).map_err(|e| bad(format!("{field}: {e}")))
}

async fn materialize(
    State(store): State<Arc<FeatureStore>>,
    caller: HttpCaller,
    body: Bytes,
) -> Result<axum::Json<Json>, HttpError> {
    let body: MaterializeBody = parse_body(&body)?;
    let window = if body.disable_event_timestamp {
        Window::Range {
            start: i64::MIN,
            end: now_nanos(),
        }
    } else {
        Window::Range {
            start: body_time(body.start_ts.as_deref(), "start_ts")?,
            end: body_time(body.end_ts.as_deref(), "end_ts")?,
        }
    };
    run_materialize(store, caller, body.feature_views, window).await
}

async fn materialize_incremental(
    State(store): State<Arc<FeatureStore>>,
    caller: HttpCaller,
    body: Bytes,
) -> Result<axum::Json<Json>, HttpError> {
    let body: MaterializeIncrementalBody = parse_body(&body)?;
    let window = Window::Incremental {
        end: body_time(Some(&body.end_ts), "end_ts")?,
        lookback: std::time::Duration::ZERO,
    };
    run_materialize(store, caller, body.feature_views, window).await
}

async fn run_materialize(
    store: Arc<FeatureStore>,
    caller: HttpCaller,
    views: Option<Vec<String>>,
    window: Window,
) -> Result<axum::Json<Json>, HttpError> {
    let request = MaterializeRequest::manual(views.unwrap_or_default(), window);
    let reports = blocking(move || {
        store
            .materialize(&caller.0, &request, &|_| {}, None)
            .map_err(|e| status(&e))
    })
    .await?;
    let views: Vec<Json> = reports
        .iter()
        .map(|r| json!({"feature_view": r.view, "rows_written": r.rows_written}))
        .collect();
    Ok(axum::Json(json!({"status": "ok", "feature_views": views})))
}
