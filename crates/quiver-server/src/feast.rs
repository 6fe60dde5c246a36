//! Feast's online protocols: `feast.serving.ServingService` over gRPC and the JSON endpoints of
//! `feast serve` over HTTP (`/get-online-features`, `/push`, `/write-to-online-store`,
//! `/health`), answered by the same [`Online`] core as Quiver's own API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use quiver_core::{ScalarType, ValueType};
use quiver_online::{FeatureValue, FieldStatus, OnlineFeatures};
use serde_json::{Map, Value as Json, json};
use tonic::{Code, Request, Response, Status};

use crate::catalog::FeatureSpec;
use crate::error::online_status;
use crate::grpc::timestamp;
use crate::online::{Loose, Online, PushTarget};
use crate::proto::feast::serving as fs;
use crate::proto::feast::types as ft;

/// The version reported by `GetFeastServingInfo`.
const SERVING_VERSION: &str = concat!("quiver ", env!("CARGO_PKG_VERSION"));

/// `feast.serving.ServingService`.
pub struct FeastServing {
    online: Arc<Online>,
}

impl FeastServing {
    /// Serves Feast's gRPC clients through `online`.
    pub fn new(online: Arc<Online>) -> Self {
        Self { online }
    }
}

fn loose(v: &ft::Value) -> Loose {
    use ft::value::Val as V;
    let list = |items: Vec<Loose>| Loose::List(items);
    match &v.val {
        None | Some(V::NullVal(_)) => Loose::Null,
        Some(V::BytesVal(b)) => Loose::Bytes(b.clone()),
        Some(V::StringVal(s) | V::JsonVal(s)) => Loose::String(s.clone()),
        Some(V::Int32Val(i)) => Loose::Int(i64::from(*i)),
        Some(V::Int64Val(i)) => Loose::Int(*i),
        Some(V::DoubleVal(f)) => Loose::Float(*f),
        Some(V::FloatVal(f)) => Loose::Float(f64::from(*f)),
        Some(V::BoolVal(b)) => Loose::Bool(*b),
        Some(V::UnixTimestampVal(s)) => Loose::Timestamp(s.saturating_mul(1_000_000)),
        Some(V::BytesListVal(l)) => list(l.val.iter().cloned().map(Loose::Bytes).collect()),
        Some(V::StringListVal(l)) => list(l.val.iter().cloned().map(Loose::String).collect()),
        Some(V::Int32ListVal(l)) => list(l.val.iter().map(|i| Loose::Int(i64::from(*i))).collect()),
        Some(V::Int64ListVal(l)) => list(l.val.iter().map(|i| Loose::Int(*i)).collect()),
        Some(V::DoubleListVal(l)) => list(l.val.iter().map(|f| Loose::Float(*f)).collect()),
        Some(V::FloatListVal(l)) => {
            list(l.val.iter().map(|f| Loose::Float(f64::from(*f))).collect())
        }
        Some(V::BoolListVal(l)) => list(l.val.iter().map(|b| Loose::Bool(*b)).collect()),
        Some(V::UnixTimestampListVal(l)) => list(
            l.val
                .iter()
                .map(|s| Loose::Timestamp(s.saturating_mul(1_000_000)))
                .collect(),
        ),
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
        let columns: Vec<(String, Vec<Loose>)> = entities
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(loose).collect()))
            .collect();
        let response = self
            .online
            .read(spec, &columns, r.full_feature_names, |_, read| {
                let mut names: Vec<String> = entities.iter().map(|(k, _)| k.clone()).collect();
                let mut results: Vec<fs::get_online_features_response::FeatureVector> = entities
                    .iter()
                    .map(
                        |(_, values)| fs::get_online_features_response::FeatureVector {
                            values: values.clone(),
                            statuses: vec![fs::FieldStatus::Present as i32; values.len()],
                            event_timestamps: vec![prost_types::Timestamp::default(); values.len()],
                        },
                    )
                    .collect();
                for (col, f) in read.features().iter().enumerate() {
                    names.push(f.output_name.clone());
                    let mut vector = fs::get_online_features_response::FeatureVector::default();
                    for row in 0..read.num_rows() {
                        let cell = read.cell(col, row).map_err(|e| online_status(&e))?;
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
            })?;
        Ok(Response::new(response))
    }
}

/// Feast's HTTP feature server endpoints.
pub fn http_router(online: Arc<Online>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/get-online-features", post(get_online_features))
        .route("/push", post(push))
        .route("/write-to-online-store", post(write_to_online_store))
        .with_state(online)
}

/// An error as Feast's server answers it: an HTTP status and `{"detail": message}`.
struct HttpError(Status);

impl From<Status> for HttpError {
    fn from(s: Status) -> Self {
        Self(s)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> HttpResponse {
        let code = match self.0.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, axum::Json(json!({"detail": self.0.message()}))).into_response()
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError(Status::invalid_argument(message.into()))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Json>, HttpError> {
    match serde_json::from_slice(body) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the request body must be a JSON object")),
        Err(e) => Err(bad(format!("malformed JSON: {e}"))),
    }
}

fn json_loose(v: &Json) -> Loose {
    match v {
        Json::Null => Loose::Null,
        Json::Bool(b) => Loose::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map_or_else(|| Loose::Float(n.as_f64().unwrap_or(f64::NAN)), Loose::Int),
        Json::String(s) => Loose::String(s.clone()),
        Json::Array(items) => Loose::List(items.iter().map(json_loose).collect()),
        Json::Object(_) => Loose::String(v.to_string()),
    }
}

/// `{"column": [values...]}` as protocol-neutral columns, in the object's order.
fn json_columns(value: Option<&Json>, field: &str) -> Result<Vec<(String, Vec<Loose>)>, HttpError> {
    let Some(Json::Object(map)) = value else {
        return Err(bad(format!("\"{field}\" must be an object of columns")));
    };
    map.iter()
        .map(|(k, v)| match v {
            Json::Array(items) => Ok((k.clone(), items.iter().map(json_loose).collect())),
            _ => Err(bad(format!("\"{field}\".\"{k}\" must be a list of values"))),
        })
        .collect()
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
            FeatureValue::Timestamp(us) => s.serialize_str(&iso(*us)),
            FeatureValue::List(items) => s.collect_seq(items.iter().map(JsonCell)),
        }
    }
}

fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map_or_else(
        || us.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
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
fn features_json(
    read: &OnlineFeatures<'_>,
    keys: &[(String, Vec<Json>)],
) -> Result<Vec<u8>, Status> {
    const EPOCH: &str = "1970-01-01T00:00:00Z";
    let rows = read.num_rows();
    let cells = (0..read.features().len())
        .map(|col| {
            (0..rows)
                .map(|row| read.cell(col, row).map_err(|e| online_status(&e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Rows of one view share their event time: format each distinct time once.
    let mut times: HashMap<i64, String> = HashMap::new();
    for cell in cells.iter().flatten() {
        if let Some(t) = cell.event_ts {
            times.entry(t).or_insert_with(|| iso(t));
        }
    }
    let mut results: Vec<FeatureVector<'_>> = keys
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
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(read.features().iter().map(|f| f.output_name.as_str()))
                .collect(),
        },
        results,
    };
    serde_json::to_vec(&answer).map_err(|e| Status::internal(e.to_string()))
}

async fn get_online_features(
    State(online): State<Arc<Online>>,
    body: Bytes,
) -> Result<HttpResponse, HttpError> {
    let body = parse_body(&body)?;
    let spec = match (body.get("features"), body.get("feature_service")) {
        (Some(Json::Array(list)), None) => FeatureSpec::Refs(
            list.iter()
                .map(|f| {
                    f.as_str().map(str::to_owned).ok_or_else(|| {
                        bad("\"features\" must be a list of \"view:feature\" strings")
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        (None, Some(Json::String(s))) => FeatureSpec::Service(s.clone()),
        _ => {
            return Err(bad(
                "give exactly one of \"features\" (a list) and \"feature_service\" (a name)",
            ));
        }
    };
    let full = body
        .get("full_feature_names")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let entities = json_columns(body.get("entities"), "entities")?;
    let raw_keys: Vec<(String, Vec<Json>)> = match body.get("entities") {
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
            .collect(),
        _ => Vec::new(),
    };
    let answer = online.read(spec, &entities, full, |_, read| {
        features_json(read, &raw_keys)
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

fn push_target(body: &Map<String, Json>) -> Result<PushTarget, HttpError> {
    match body.get("to").and_then(Json::as_str).unwrap_or("online") {
        "online" => Ok(PushTarget::Online),
        "offline" => Ok(PushTarget::Offline),
        "online_and_offline" => Ok(PushTarget::OnlineAndOffline),
        other => Err(bad(format!(
            "\"to\" must be online, offline or online_and_offline, not '{other}'"
        ))),
    }
}

async fn push(
    State(online): State<Arc<Online>>,
    body: Bytes,
) -> Result<axum::Json<Json>, HttpError> {
    let body = parse_body(&body)?;
    let name = body
        .get("push_source_name")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("missing \"push_source_name\""))?
        .to_owned();
    let to = push_target(&body)?;
    let columns = json_columns(body.get("df"), "df")?;
    // A push source is a feature view, or a source: every view reading it.
    let snapshot = online.snapshot();
    let views: Vec<String> = if snapshot.defs.feature_views.contains_key(&name) {
        vec![name.clone()]
    } else {
        snapshot
            .defs
            .feature_views
            .values()
            .filter(|v| v.source == name && (v.online || to == PushTarget::Offline))
            .map(|v| v.name.clone())
            .collect()
    };
    if views.is_empty() {
        return Err(HttpError(Status::not_found(format!(
            "unknown push source '{name}' (expected a feature view or a source name)"
        ))));
    }
    let mut rows = 0;
    for (i, view) in views.iter().enumerate() {
        // The views share one source: it gets the rows once, with the first view.
        let target = match (to, i) {
            (_, 0) => to,
            (PushTarget::Offline, _) => continue,
            _ => PushTarget::Online,
        };
        rows = online
            .push_blocking(view.clone(), columns.clone(), target)
            .await?
            .rows;
    }
    Ok(axum::Json(
        json!({"status": "ok", "rows": rows, "feature_views": views}),
    ))
}

async fn write_to_online_store(
    State(online): State<Arc<Online>>,
    body: Bytes,
) -> Result<axum::Json<Json>, HttpError> {
    let body = parse_body(&body)?;
    let view = body
        .get("feature_view_name")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("missing \"feature_view_name\""))?
        .to_owned();
    let columns = json_columns(body.get("df"), "df")?;
    let pushed = online
        .push_blocking(view, columns, PushTarget::Online)
        .await?;
    Ok(axum::Json(json!({"status": "ok", "rows": pushed.rows})))
}
