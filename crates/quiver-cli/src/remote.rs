//! `quiver get-online`: an online read from a running `quiver serve`, for humans.

use anyhow::{Context, Result};
use quiver_core::{Definitions, KeyType};
use quiver_server::proto::quiver::v1 as pb;
use serde_json::{Value, json};

use crate::output;

/// Parses `--entity driver_id=1001,1002` flags into key columns, using the declared key types
/// when the registry knows the key (integers and strings are told apart by shape otherwise).
pub fn entity_columns(flags: &[String], defs: Option<&Definitions>) -> Result<Vec<pb::Column>> {
    let declared = |name: &str| {
        defs.and_then(|d| {
            d.entities
                .values()
                .flat_map(|e| &e.join_keys)
                .find(|k| k.name == name)
                .map(|k| k.key_type)
        })
    };
    flags
        .iter()
        .map(|flag| {
            let (name, values) = flag
                .split_once('=')
                .with_context(|| format!("--entity '{flag}': expected KEY=VALUE[,VALUE...]"))?;
            let values = values
                .split(',')
                .map(|v| {
                    let as_int = || {
                        v.parse::<i64>()
                            .map(pb::value::Kind::Int64Value)
                            .with_context(|| format!("--entity {name}: '{v}' is not an integer"))
                    };
                    let kind = match declared(name) {
                        Some(KeyType::Int32 | KeyType::Int64) => as_int()?,
                        Some(KeyType::Bytes) => pb::value::Kind::BytesValue(v.as_bytes().to_vec()),
                        Some(KeyType::String) => pb::value::Kind::StringValue(v.to_owned()),
                        None => {
                            as_int().unwrap_or_else(|_| pb::value::Kind::StringValue(v.to_owned()))
                        }
                    };
                    Ok(pb::Value { kind: Some(kind) })
                })
                .collect::<Result<_>>()?;
            Ok(pb::Column {
                name: name.to_owned(),
                values,
            })
        })
        .collect()
}

/// A value of an answer as JSON, as `quiver online get` prints values.
pub fn value_json(v: &pb::Value) -> Value {
    use pb::value::Kind as K;
    match &v.kind {
        None => Value::Null,
        Some(K::BoolValue(b)) => json!(b),
        Some(K::Int32Value(i)) => json!(i),
        Some(K::Int64Value(i)) => json!(i),
        // Shortest decimal of the f32, not of its f64 widening.
        Some(K::FloatValue(f)) => f
            .to_string()
            .parse::<f64>()
            .map_or(Value::Null, |x| json!(x)),
        Some(K::DoubleValue(f)) => json!(f),
        Some(K::StringValue(s)) => json!(s),
        Some(K::BytesValue(b)) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        Some(K::TimestampMicros(t)) => json!(crate::online::time_text(t.saturating_mul(1_000))),
        Some(K::ListValue(l)) => Value::Array(l.values.iter().map(value_json).collect()),
    }
}

/// Calls `GetOnlineFeatures` on the server at `address` and prints the answer.
pub fn get_online(
    address: &str,
    request: pb::GetOnlineFeaturesRequest,
    as_json: bool,
) -> Result<()> {
    let keys: Vec<pb::Column> = request.entities.clone();
    let runtime = crate::access::Server::runtime()?;
    let server = crate::access::Server::connect(&runtime, address, None)?;
    let response = runtime.block_on(async {
        let mut client = pb::online_service_client::OnlineServiceClient::new(server.channel);
        client
            .get_online_features(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| crate::access::status_error(&s))
    })?;
    let rows = response.row_count as usize;
    let status = |s: i32| {
        pb::FieldStatus::try_from(s)
            .map_or("INVALID", |s| s.as_str_name())
            .to_owned()
    };
    if as_json {
        let out: Vec<Value> = (0..rows)
            .map(|r| {
                let mut row = serde_json::Map::new();
                for k in &keys {
                    row.insert(
                        k.name.clone(),
                        k.values.get(r).map_or(Value::Null, value_json),
                    );
                }
                for f in &response.features {
                    row.insert(
                        f.name.clone(),
                        json!({"value": value_json(&f.values[r]), "status": status(f.statuses[r])}),
                    );
                }
                Value::Object(row)
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"registry_version": response.registry_version, "rows": out})
            )?
        );
        return Ok(());
    }
    let mut header: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    header.extend(response.features.iter().map(|f| f.name.as_str()));
    let table: Vec<Vec<String>> = (0..rows)
        .map(|r| {
            let mut cells: Vec<String> = keys
                .iter()
                .map(|k| {
                    k.values
                        .get(r)
                        .map_or(String::new(), |v| value_json(v).to_string())
                })
                .collect();
            for f in &response.features {
                let s = status(f.statuses[r]);
                let v = value_json(&f.values[r]);
                cells.push(if s == "PRESENT" {
                    v.to_string()
                } else {
                    format!("{v} ({s})")
                });
            }
            cells
        })
        .collect();
    print!("{}", output::table(&header, &table));
    Ok(())
}
