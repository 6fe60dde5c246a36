//! Training sets through the real binary: `quiver training-set`, and `quiver serve` answering
//! Arrow Flight requests from a Rust client and the Python example (pyarrow).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema, TimeUnit};
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::TryStreamExt;
use quiver_e2e::{
    Server, example_repo, examples_dir, python_json, quiver_ok, read_parquet, write_parquet,
};
use tonic::Code;

/// Entity rows for the example: (driver, customer, hours ago).
pub(crate) fn entities() -> RecordBatch {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = 3_600_000_000_000i64;
    let rows = [
        (1001, "C1001", 1),
        (1002, "C1002", 3),
        (1001, "C1001", 1),
        (4242, "C1", 2),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("label", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(
                    rows.iter().map(|r| now_ns - r.2 * hour),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
        ],
    )
    .unwrap()
}

pub(crate) const FEATURES: &str = "driver_hourly_stats:conv_rate,driver_hourly_stats:avg_daily_trips,customer_profile:current_balance";

pub(crate) fn client(server: &Server) -> FlightClient {
    let channel =
        tonic::transport::Channel::from_shared(server.flight.replace("grpc://", "http://"))
            .unwrap()
            .connect_lazy();
    FlightClient::new(channel)
}

pub(crate) async fn exchange(
    client: &mut FlightClient,
    command: &str,
    table: RecordBatch,
) -> Result<RecordBatch, tonic::Status> {
    let schema = table.schema();
    let input = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_owned())))
        .build(futures::stream::iter([Ok(table)]));
    let stream = client.do_exchange(input).await.map_err(status)?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(status)?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    Ok(arrow::compute::concat_batches(&schema, &batches).unwrap())
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

#[test]
fn training_set_command_and_flight_agree() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let table = entities();
    write_parquet(&repo.join("entities.parquet"), &table);
    let out = repo.join("training.parquet");
    quiver_ok(
        repo,
        &[
            "training-set",
            "--entities",
            repo.join("entities.parquet").to_str().unwrap(),
            "--features",
            FEATURES,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let local = read_parquet(&out);
    assert_eq!(local.num_rows(), 4);
    let trips = local
        .column_by_name("avg_daily_trips")
        .unwrap()
        .as_primitive::<Int64Type>();
    let rate = local
        .column_by_name("conv_rate")
        .unwrap()
        .as_primitive::<Float32Type>();
    // Known drivers have features (a row is written every hour); duplicates agree; an unknown
    // driver gets nulls and is kept.
    assert!(trips.is_valid(0) && trips.is_valid(1));
    assert_eq!(trips.value(0), trips.value(2));
    assert_eq!(rate.is_valid(0), rate.is_valid(2));
    assert!(trips.is_null(3));
    assert_eq!(
        local
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values(),
        &[0, 1, 2, 3]
    );

    let server = Server::start(repo);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut c = client(&server);
        let features: Vec<&str> = FEATURES.split(',').collect();
        let command = serde_json::json!({"features": features}).to_string();
        let remote = exchange(&mut c, &command, table.clone()).await.unwrap();
        assert_eq!(remote, local);

        // DoGet on a Parquet file the server can read gives the same rows.
        let ticket = serde_json::json!({"features": features, "entities": "entities.parquet"});
        let got: Vec<RecordBatch> = c
            .do_get(Ticket::new(ticket.to_string()))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&got[0].schema(), &got).unwrap(),
            local
        );

        // GetSchema describes the output without running the join.
        let schema = c
            .get_schema(FlightDescriptor::new_cmd(command.clone()))
            .await
            .unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "driver_id",
                "customer_id",
                "event_timestamp",
                "conv_rate",
                "avg_daily_trips",
                "current_balance"
            ]
        );

        // ListFlights: one flight per offline view.
        let flights: Vec<_> = c
            .list_flights(Vec::<u8>::new())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(flights.len(), 3);

        // A feature service works like its features.
        let service =
            serde_json::json!({"feature_service": "driver_activity", "full_feature_names": true});
        let by_service = exchange(&mut c, &service.to_string(), table.clone())
            .await
            .unwrap();
        assert!(
            by_service
                .column_by_name("driver_hourly_stats__conv_rate")
                .is_some()
        );
        assert_eq!(by_service.num_rows(), 4);
    });
    assert!(server.stop(), "the server exits cleanly on SIGTERM");
}

#[test]
fn bad_flight_requests_get_clear_statuses() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut c = client(&server);
        let cases: [(&str, Code, &str); 5] = [
            ("{not json", Code::InvalidArgument, "not valid JSON"),
            (
                r#"{"features": ["driver_hourly_stats:nope"]}"#,
                Code::NotFound,
                "driver_hourly_stats:nope",
            ),
            (r#"{"features": ["nope:x"]}"#, Code::NotFound, "'nope'"),
            (
                r#"{"features": ["conv_rate"]}"#,
                Code::InvalidArgument,
                "'conv_rate'",
            ),
            (r#"{"feature": []}"#, Code::InvalidArgument, "feature"),
        ];
        for (command, code, needle) in cases {
            let e = exchange(&mut c, command, entities()).await.unwrap_err();
            assert_eq!(e.code(), code, "{command}: {e:?}");
            assert!(e.message().contains(needle), "{command}: {}", e.message());
        }
        // An entity table without the join key.
        let no_key = entities().project(&[1, 2, 3]).unwrap();
        let command =
            serde_json::json!({"features": ["driver_hourly_stats:conv_rate"]}).to_string();
        let e = exchange(&mut c, &command, no_key).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("'driver_id'"), "{}", e.message());
        // An api Feast does not have is UNIMPLEMENTED, naming it and the ones Quiver answers.
        let feast = r#"{"command_id": "1", "api": "read_everything"}"#;
        let e = c
            .get_flight_info(FlightDescriptor::new_cmd(feast))
            .await
            .map_err(status)
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e.message().contains("'read_everything'"), "{}", e.message());
        assert!(
            e.message().contains("offline_write_batch"),
            "{}",
            e.message()
        );
        // A pull names the source it cannot find, and the column it cannot read.
        let pull = |source: &str, feature: &str| {
            serde_json::json!({"command_id": "2", "api": "pull_latest_from_table_or_query",
                "data_source_name": source, "join_key_columns": ["driver_id"],
                "feature_name_columns": [feature], "timestamp_field": "event_timestamp",
                "created_timestamp_column": null, "start_date": "2020-01-01T00:00:00+00:00",
                "end_date": "2030-01-01T00:00:00+00:00"})
            .to_string()
        };
        let e = exchange(&mut c, &pull("nope", "conv_rate"), entities())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(
            e.message().contains("no data source 'nope'"),
            "{}",
            e.message()
        );
        let e = exchange(&mut c, &pull("driver_stats_source", "speed"), entities())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("'speed'"), "{}", e.message());
        // The server is still healthy afterwards.
        let ok = exchange(&mut c, &command, entities()).await.unwrap();
        assert_eq!(ok.num_rows(), 4);
    });
}

#[test]
fn python_example_reads_a_training_set() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    let rows = python_json(
        &examples_dir().join("python/training_set.py"),
        ["--server", &server.flight, "--json"],
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["driver_id"], 1001);
    assert!(
        rows[0]["conv_rate"].is_number() || rows[0]["avg_daily_trips"].is_number(),
        "{rows:?}"
    );
    assert!(
        rows[4]["avg_daily_trips"].is_null(),
        "unknown driver 9999 gets nulls"
    );
    assert_eq!(rows[3]["label_accepted"], 1);
}

#[test]
fn feast_sdk_remote_offline_store_matches_feast_itself() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    let (host, port) = server.flight_host_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/feast_offline_parity.py");
    let report = python_json(&script, [repo.as_os_str(), host.as_ref(), port.as_ref()]);
    assert_eq!(report["rows"], 12, "every entity row is kept: {report}");
    // Feast's file store drops rows that match nothing; Quiver keeps them with nulls.
    for row in report["dropped_by_feast"].as_array().unwrap() {
        for feature in [
            "conv_rate",
            "avg_daily_trips",
            "current_balance",
            "lifetime_trip_count",
        ] {
            assert!(row[feature].is_null(), "{report}");
        }
    }
    assert!(report["feast_rows"].as_u64().unwrap() >= 10, "{report}");
    assert!(
        report["non_null"].as_u64().unwrap() >= 6,
        "the join found features: {report}"
    );
    assert_eq!(report["differences"], serde_json::json!([]), "{report}");
}

#[test]
fn an_entity_table_with_a_column_twice_is_refused() {
    let dir = example_repo();
    quiver_ok(dir.path(), &["apply"]);
    let server = Server::start(dir.path());
    let base = entities();
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = base.columns().to_vec();
    fields.push(Field::new("driver_id", DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from(vec![7; base.num_rows()])));
    let twice = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            let mut client = client(&server);
            exchange(
                &mut client,
                r#"{"features": ["driver_hourly_stats:conv_rate"]}"#,
                twice,
            )
            .await
        })
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("two columns named 'driver_id'"),
        "{err:?}"
    );
}

/// Every offline api of Feast's remote store, from Feast 0.67's CLI and SDK with Feast's own
/// SQLite online store: `feast apply` infers a schema through Quiver, `feast materialize`
/// through Quiver gives what Quiver's own materialization serves, `feast plan` shows a change.
#[test]
fn feast_offline_apis_through_quiver() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    quiver_ok(repo, &["materialize", "2020-01-01", "now"]);
    let server = Server::start(repo);
    let (host, port) = server.flight_host_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/feast_offline.py");
    let report = python_json(
        &script,
        [
            repo.as_os_str(),
            host.as_ref(),
            port.as_ref(),
            server.http.as_ref(),
        ],
    );
    assert_eq!(
        report["inferred"],
        serde_json::json!(["last_rating", "trips_together"]),
        "{report}"
    );
    let plan = report["plan"].as_str().unwrap();
    assert!(
        plan.contains("Updated feature view driver_hourly_stats"),
        "{plan}"
    );
    assert!(plan.contains("'team': 'drivers'"), "{plan}");
    assert_eq!(
        report["tags_after_apply"],
        serde_json::json!({"team": "drivers"})
    );
    // Feast's materialization (pull_all_from_table_or_query) and pull_latest_from_table_or_query.
    assert_eq!(report["feast_online"], report["quiver_online"], "{report}");
    assert!(
        report["quiver_online"]["conv_rate"]
            .as_array()
            .unwrap()
            .iter()
            .all(serde_json::Value::is_number),
        "{report}"
    );
    assert_eq!(
        report["pulled_latest"]["trips"], report["quiver_online"]["avg_daily_trips"],
        "{report}"
    );
    assert_eq!(report["pulled_latest"]["rows"], 10, "{report}");
    // pull_all_from_table_or_query sees the row offline_write_batch appended.
    let pulled = report["pulled_all"].as_array().unwrap();
    assert_eq!(pulled[1].as_u64().unwrap(), pulled[0].as_u64().unwrap() + 1);
    assert_eq!(
        report["appended_row"],
        serde_json::json!([{"driver_id": 4242, "customer_id": "C4242", "trips_together": 17, "last_rating": 4.5}])
    );
    let appended = std::fs::read_dir(repo.join("data/driver_customer_trips"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("push-")
        })
        .count();
    assert_eq!(appended, 1);
    // persist writes the saved dataset once, and refuses to replace it.
    assert_eq!(report["saved_rows"], report["training_rows"], "{report}");
    assert_eq!(report["saved_rows"], 10, "{report}");
    let again = report["persist_again"].as_str().unwrap();
    assert!(again.contains("exists already"), "{again}");
    // write_logged_features.
    assert_eq!(report["logged"], 3, "{report}");
    // entity_df_sql is refused with what to send instead.
    let sql = report["sql_error"].as_str().unwrap();
    assert!(sql.contains("send the entity rows as a DataFrame"), "{sql}");
}

#[test]
fn feast_apply_infers_a_schema_through_quiver() {
    let dir = example_repo();
    let repo = dir.path();
    quiver_ok(repo, &["apply"]);
    let server = Server::start(repo);
    let (host, port) = server.flight_host_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/feast_infer.py");
    let report = python_json(&script, [repo.as_os_str(), host.as_ref(), port.as_ref()]);
    let features = &report["features"];
    // The source's columns other than keys and times, with Feast's types.
    assert_eq!(features["conv_rate"], "Float32", "{report}");
    assert_eq!(features["trips"], "Int64", "{report}");
    assert!(features.get("driver_id").is_none(), "{report}");
    assert!(features.get("event_timestamp").is_none(), "{report}");
}
