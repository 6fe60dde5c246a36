//! Feast's registry protocol: changes wait per connection for `Commit`, which registers one
//! version with the conflict rule and the validation of files.

use quiver_server::proto::feast::core as fc;
use quiver_server::proto::feast::registry as fr;
use quiver_server::proto::feast::registry::registry_server_client::RegistryServerClient;
use quiver_server::proto::feast::types::value_type::Enum as FeastType;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixture::TestServer;

fn entity(name: &str) -> fc::Entity {
    fc::Entity {
        spec: Some(fc::EntitySpecV2 {
            name: name.into(),
            join_key: format!("{name}_id"),
            value_type: FeastType::String as i32,
            ..Default::default()
        }),
        meta: None,
    }
}

async fn apply(
    client: &mut RegistryServerClient<Channel>,
    name: &str,
    commit: bool,
) -> Result<(), tonic::Status> {
    client
        .apply_entity(fr::ApplyEntityRequest {
            entity: Some(entity(name)),
            project: "p".into(),
            commit,
        })
        .await
        .map(|_| ())
}

async fn entities(client: &mut RegistryServerClient<Channel>) -> Vec<String> {
    let listed = client
        .list_entities(fr::ListRequest {
            project: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    listed
        .entities
        .into_iter()
        .map(|e| e.spec.unwrap().name)
        .collect()
}

#[test]
fn uncommitted_changes_are_per_connection_and_commit_keeps_the_conflict_rule() {
    let server = TestServer::start();
    server.runtime.block_on(async {
        // Two clients, two connections.
        let mut a = RegistryServerClient::new(server.channel());
        let mut b = RegistryServerClient::new(server.channel());
        apply(&mut a, "rider", false).await.unwrap();
        assert_eq!(entities(&mut a).await, ["driver", "rider"]);
        assert_eq!(entities(&mut b).await, ["driver"]);
        // B registers a version first: A's changes were planned on the one before.
        apply(&mut b, "courier", true).await.unwrap();
        let e = a.commit(()).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        assert!(e.message().contains("\"class\":\"FeastError\""), "{e:?}");
        assert_eq!(entities(&mut a).await, ["courier", "driver"]);
        // Invalid definitions are refused as files are, and nothing is registered.
        let view = fc::FeatureView {
            spec: Some(fc::FeatureViewSpec {
                name: "orphan".into(),
                entities: vec!["nobody".into()],
                batch_source: Some(fc::DataSource {
                    name: "stats".into(),
                    timestamp_field: "event_timestamp".into(),
                    options: Some(fc::data_source::Options::FileOptions(
                        fc::data_source::FileOptions {
                            uri: "data/stats".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            meta: None,
        };
        let e = a
            .apply_feature_view(fr::ApplyFeatureViewRequest {
                base_feature_view: Some(
                    fr::apply_feature_view_request::BaseFeatureView::FeatureView(view),
                ),
                project: "p".into(),
                commit: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("orphan"), "{e:?}");
        assert!(e.message().contains("nobody"), "{e:?}");
        assert_eq!(entities(&mut b).await, ["courier", "driver"]);
        // Features are listed by view, with Feast's type names.
        let listed = b
            .list_features(fr::ListFeaturesRequest {
                project: "p".into(),
                feature_view: "stats".into(),
                name: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let names: Vec<(String, String)> = listed
            .features
            .into_iter()
            .map(|f| (f.name, f.r#type))
            .collect();
        assert_eq!(names, [("rate".to_owned(), "Float64".to_owned())]);
        // Calls Quiver does not answer say why.
        let e = b.get_registry_lineage(fr::Ignored {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(
            e.message().contains("GetRegistryLineage is not supported"),
            "{e:?}"
        );
        // Another project is not this server's.
        let e = b
            .apply_entity(fr::ApplyEntityRequest {
                entity: Some(entity("x")),
                project: "other".into(),
                commit: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    });
}
