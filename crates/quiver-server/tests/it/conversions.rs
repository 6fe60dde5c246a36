//! Every protocol reports an error by its kind: malformed messages, conflicts, missing
//! versions, missing objects, bad input, preconditions.

use bytes::{Buf, BufMut};
use futures::StreamExt;
use quiver_server::proto::quiver::v1 as pb;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::fixture::TestServer;

/// Sends raw bytes as a gRPC message and ignores whatever comes back.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

fn raw_call(server: &TestServer, method: &'static str, bytes: Vec<u8>) -> tonic::Status {
    server.runtime.block_on(async {
        let mut grpc = tonic::client::Grpc::new(server.channel());
        grpc.ready().await.unwrap();
        grpc.unary(
            tonic::Request::new(bytes),
            http::uri::PathAndQuery::from_static(method),
            RawCodec,
        )
        .await
        .expect_err("the server refuses the message")
    })
}

#[test]
fn undecodable_messages_are_invalid_argument() {
    let server = TestServer::start();
    let garbage = raw_call(
        &server,
        "/quiver.v1.OnlineService/GetOnlineFeatures",
        vec![0xff, 0xff, 0xff, 0xff],
    );
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    assert!(
        garbage
            .message()
            .contains("malformed GetOnlineFeaturesRequest"),
        "{garbage:?}"
    );
    // feature_refs { refs: "\xc3\x28" }: a string that is not UTF-8.
    let not_utf8 = raw_call(
        &server,
        "/quiver.v1.OnlineService/GetOnlineFeatures",
        vec![0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28],
    );
    assert_eq!(not_utf8.code(), Code::InvalidArgument, "{not_utf8:?}");
    let feast = raw_call(
        &server,
        "/feast.serving.ServingService/GetOnlineFeatures",
        vec![0x12, 0x04, 0x0a, 0x02, 0xc3, 0x28],
    );
    assert_eq!(feast.code(), Code::InvalidArgument, "{feast:?}");
}

fn apply(server: &TestServer, based_on: Option<u64>) -> Result<pb::ApplyResponse, tonic::Status> {
    let files = [(
        "defs.yaml".to_owned(),
        std::fs::read_to_string(server.dir.path().join("defs.yaml")).unwrap(),
    )]
    .into_iter()
    .collect();
    server.runtime.block_on(async {
        pb::registry_service_client::RegistryServiceClient::new(server.channel())
            .apply(pb::ApplyRequest {
                files,
                based_on,
                author: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
    })
}

#[test]
fn applies_on_a_missing_or_stale_version_are_refused_by_kind() {
    let server = TestServer::start();
    let unknown = apply(&server, Some(99)).unwrap_err();
    assert_eq!(unknown.code(), Code::FailedPrecondition, "{unknown:?}");
    assert!(
        unknown.message().contains("no registry version 99"),
        "{unknown:?}"
    );
    let stale = apply(&server, Some(0)).unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let same = apply(&server, None).unwrap();
    assert_eq!(
        (same.version, same.changes.len()),
        (1, 0),
        "nothing changed"
    );
}

#[test]
fn materialize_streams_progress_then_a_report_per_view_and_is_recorded() {
    let server = TestServer::start();
    let events: Vec<pb::MaterializeEvent> = server.runtime.block_on(async {
        let mut client =
            pb::materialization_service_client::MaterializationServiceClient::new(server.channel());
        let stream = client
            .materialize(pb::MaterializeRequest {
                views: vec!["stats".into()],
                start_nanos: i64::MIN,
                end_nanos: i64::MAX,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stream.map(Result::unwrap).collect().await
    });
    use pb::materialize_event::Event;
    assert!(
        matches!(events[0].event, Some(Event::ViewStarted(_))),
        "{events:?}"
    );
    let Some(Event::ViewDone(report)) = &events.last().unwrap().event else {
        panic!("{events:?}");
    };
    assert_eq!((report.view.as_str(), report.rows_written), ("stats", 100));
    server.runtime.block_on(async {
        let mut client =
            pb::materialization_service_client::MaterializationServiceClient::new(server.channel());
        let runs = client
            .list_runs(pb::ListRunsRequest {
                view: "stats".into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .runs;
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].outcome.as_str(), runs[0].trigger.as_str()),
            ("succeeded", "manual")
        );
        let missing = client
            .materialize(pb::MaterializeRequest {
                views: vec!["nope".into()],
                start_nanos: 0,
                end_nanos: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .next()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        let backwards = client
            .materialize(pb::MaterializeRequest {
                views: Vec::new(),
                start_nanos: 2,
                end_nanos: 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(backwards.code(), Code::InvalidArgument);
        let engine = |name: &str| pb::MaterializeRequest {
            views: Vec::new(),
            start_nanos: 0,
            end_nanos: 1,
            engine: name.to_owned(),
        };
        let unknown = client.materialize(engine("hive")).await.unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
        assert!(unknown.message().contains("hive"), "{unknown:?}");
        // No offline_engine: Spark is not configured.
        let spark = client
            .materialize(engine("spark"))
            .await
            .unwrap()
            .into_inner()
            .next()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(spark.code(), Code::FailedPrecondition, "{spark:?}");
    });
}

#[test]
fn the_online_store_service_reports_and_backs_up_on_the_servers_disk() {
    let server = TestServer::start();
    server.runtime.block_on(async {
        let mut client =
            pb::online_store_service_client::OnlineStoreServiceClient::new(server.channel());
        let stats = client
            .get_stats(pb::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(stats.location.ends_with("online_store"), "{stats:?}");
        assert_eq!(stats.registry_version, 1);
        let relative = client
            .backup(pb::BackupRequest {
                dir: "backup".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(relative.code(), Code::InvalidArgument);
        let dir = server.dir.path().join("backup");
        client
            .backup(pb::BackupRequest {
                dir: dir.display().to_string(),
            })
            .await
            .unwrap();
        assert!(dir.join("CURRENT").exists());
        let again = client
            .backup(pb::BackupRequest {
                dir: dir.display().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::InvalidArgument, "{again:?}");
    });
}

#[test]
fn http_answers_follow_the_same_kinds() {
    let server = TestServer::start();
    let push = |name: &str, to: &str| {
        let body = serde_json::json!({
            "push_source_name": name,
            "df": {"driver_id": [1], "event_timestamp": ["2024-01-01T00:00:00Z"], "rate": [0.5]},
            "to": to,
        });
        server.http("POST", "/push", &body.to_string())
    };
    let (code, body) = push("nope", "online");
    assert_eq!(code, 404, "{body}");
    let (code, body) = push("single", "offline");
    assert_eq!(code, 400, "a single-file source cannot take rows: {body}");
    assert!(body.contains("not a folder"), "{body}");
    let (code, body) = push("stats", "sideways");
    assert_eq!(code, 400, "{body}");
    let (code, body) = server.http("POST", "/get-online-features", "{\"features\": 1}");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid request"), "{body}");
    let (code, body) = server.http(
        "POST",
        "/get-online-features",
        r#"{"features": ["stats:rate"], "entities": {"driver_id": [1], "driver_id": [2]}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("given twice"), "{body}");
}

#[test]
fn flight_refuses_an_entity_table_with_a_column_twice() {
    use arrow::array::{Int64Array, RecordBatch, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let server = TestServer::start();
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(TimestampNanosecondArray::from(vec![0]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let err = server.runtime.block_on(async {
        let mut client = server.flight();
        let input = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_cmd(
                r#"{"features": ["stats:rate"]}"#,
            )))
            .build(futures::stream::iter([Ok(batch)]));
        match client.do_exchange(input).await {
            Err(e) => e,
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Err(e)) => break e,
                    Some(Ok(_)) => {}
                    None => panic!("the exchange succeeded"),
                }
            },
        }
    });
    let arrow_flight::error::FlightError::Tonic(status) = err else {
        panic!("{err:?}");
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("two columns named 'driver_id'"),
        "{status:?}"
    );
}
