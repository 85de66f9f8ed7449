//! Who may do what to alerts, against the real PostgreSQL: without a
//! token nothing; an analyst reads but cannot acknowledge or resolve; an
//! officer's action is attributed to the token's identity, whatever name
//! the request types.

use std::time::Duration;

use quantrac_db::access::Role;
use quantrac_proto::v1::alert_service_client::AlertServiceClient;
use quantrac_proto::v1::{
    AcknowledgeAlertRequest, AlertState, AssignAlertRequest, CommentAlertRequest,
    ResolveAlertRequest, SubscribeAlertsRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

mod common;
use common::{alert_client, fresh_database, registry, start_single_node, stored_cod, unique};

#[tokio::test]
async fn manual_actions_need_an_officer_and_name_the_token_holder() {
    let db_url = fresh_database().await;
    let station = unique("ACC");
    let reg = registry(&station);
    let stop = CancellationToken::new();
    let (alerting, bus) = start_single_node(&db_url, &reg, &stop).await;

    // No token: not even a subscription.
    let mut anonymous = AlertServiceClient::connect(format!("http://{}", alerting.grpc_addr))
        .await
        .expect("grpc");
    let e = anonymous
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect_err("anonymous subscribe");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let mut analyst =
        alert_client(alerting.grpc_addr, &db_url, "analyst@dost", Role::Analyst).await;
    let mut live = analyst
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("an analyst subscribes")
        .into_inner();
    bus.send(stored_cod(&station, 300.0, 10))
        .await
        .expect("bus");
    let opened = tokio::time::timeout(Duration::from_secs(30), live.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an alert");
    assert_eq!(opened.state(), AlertState::Open);

    // An anonymous resolve, and an analyst's, leave the exceedance open.
    let e = anonymous
        .resolve(ResolveAlertRequest {
            alert_id: opened.id.clone(),
            officer: "officer.lan".into(),
            note: "silence it".into(),
        })
        .await
        .expect_err("anonymous resolve");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = analyst
        .acknowledge(AcknowledgeAlertRequest {
            alert_id: opened.id.clone(),
            officer: "officer.lan".into(),
            note: String::new(),
        })
        .await
        .expect_err("analyst acknowledge");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let db = quantrac_testkit::db::connect(&db_url).await;
    let state: String = db
        .query_one("SELECT state FROM alerts WHERE id = $1", &[&opened.id])
        .await
        .expect("alert")
        .get(0);
    assert_eq!(state, "open");

    // An officer's acknowledgement is theirs, not the typed name's.
    let mut officer = alert_client(
        alerting.grpc_addr,
        &db_url,
        "lan.nguyen@dost",
        Role::Officer,
    )
    .await;
    let acked = officer
        .acknowledge(AcknowledgeAlertRequest {
            alert_id: opened.id.clone(),
            officer: "someone.else".into(),
            note: "calling the plant".into(),
        })
        .await
        .expect("officer acknowledges")
        .into_inner();
    assert_eq!(acked.state(), AlertState::Acknowledged);
    assert_eq!(acked.acknowledged_by, "lan.nguyen@dost");
    let actor: String = db
        .query_one(
            "SELECT actor FROM alert_events WHERE alert_id = $1 AND change = 'acknowledged'",
            &[&opened.id],
        )
        .await
        .expect("event")
        .get(0);
    assert_eq!(actor, "lan.nguyen@dost");

    // The audit log holds the refusals and the action, chained.
    let entries: Vec<(String, String, String)> = db
        .query(
            "SELECT actor, action, target FROM audit_log ORDER BY sequence",
            &[],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let refused = |actor: &str, method: &str| {
        (
            actor.to_string(),
            "call_refused".to_string(),
            method.to_string(),
        )
    };
    assert_eq!(
        entries,
        vec![
            refused("anonymous", "Subscribe"),
            refused("anonymous", "Resolve"),
            refused("analyst@dost", "Acknowledge"),
            (
                "lan.nguyen@dost".into(),
                "acknowledge".into(),
                opened.id.clone()
            ),
        ]
    );
    let verified = quantrac_db::audit::verify(&db).await.expect("verify");
    assert_eq!((verified.rows, verified.broken), (4, None));

    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

/// Assigning and commenting are an officer's acts like acknowledging: an
/// analyst is refused, and each lands in the alert's history under the
/// token holder's name, the assignee on the alert itself.
#[tokio::test]
async fn officers_assign_and_comment_and_the_history_names_them() {
    let db_url = fresh_database().await;
    let station = unique("ASG");
    let reg = registry(&station);
    let stop = CancellationToken::new();
    let (alerting, bus) = start_single_node(&db_url, &reg, &stop).await;
    let mut analyst =
        alert_client(alerting.grpc_addr, &db_url, "analyst@dost", Role::Analyst).await;
    let mut officer = alert_client(
        alerting.grpc_addr,
        &db_url,
        "lan.nguyen@dost",
        Role::Officer,
    )
    .await;
    let mut live = analyst
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    bus.send(stored_cod(&station, 300.0, 10))
        .await
        .expect("bus");
    let opened = tokio::time::timeout(Duration::from_secs(30), live.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an alert");

    let e = analyst
        .assign(AssignAlertRequest {
            alert_id: opened.id.clone(),
            assignee: "analyst@dost".into(),
            note: String::new(),
        })
        .await
        .expect_err("analyst assign");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = officer
        .assign(AssignAlertRequest {
            alert_id: opened.id.clone(),
            assignee: "  ".into(),
            note: String::new(),
        })
        .await
        .expect_err("nobody");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    let assigned = officer
        .assign(AssignAlertRequest {
            alert_id: opened.id.clone(),
            assignee: "binh.tran@dost".into(),
            note: "your zone".into(),
        })
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(assigned.assignee, "binh.tran@dost");
    assert_eq!(assigned.state(), AlertState::Open);
    officer
        .comment(CommentAlertRequest {
            alert_id: opened.id.clone(),
            text: "plant says the aerator tripped".into(),
        })
        .await
        .expect("comment");
    // The live stream carries both changes, the assignee kept.
    for _ in 0..2 {
        let a = tokio::time::timeout(Duration::from_secs(10), live.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("a change");
        assert_eq!(a.assignee, "binh.tran@dost");
    }

    let db = quantrac_testkit::db::connect(&db_url).await;
    let history: Vec<(String, String, String)> = db
        .query(
            "SELECT change, actor, note FROM alert_events WHERE alert_id = $1 AND change IN ('assigned', 'commented') ORDER BY sequence",
            &[&opened.id],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        history,
        vec![
            (
                "assigned".into(),
                "lan.nguyen@dost".into(),
                "your zone".into()
            ),
            (
                "commented".into(),
                "lan.nguyen@dost".into(),
                "plant says the aerator tripped".into()
            ),
        ]
    );
    let assignee: Option<String> = db
        .query_one("SELECT assignee FROM alerts WHERE id = $1", &[&opened.id])
        .await
        .expect("alert")
        .get(0);
    assert_eq!(assignee.as_deref(), Some("binh.tran@dost"));

    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

/// With an `[oidc]` issuer configured, a person signed in at the operator's
/// identity provider acts with its token: an officer's JWT acknowledges
/// and the action names them as the provider does; an analyst's JWT is
/// refused the same action.
#[tokio::test]
async fn an_officers_provider_token_acknowledges_under_their_name() {
    use quantrac_testkit::oidc::{Key, claims, config, serve_jwks};

    let key = Key::ec();
    let (jwks_url, _) = serve_jwks(serde_json::json!({"keys": [key.jwk("k1")]})).await;
    let db_url = fresh_database().await;
    let station = unique("OIDC");
    let reg = registry(&station);
    let stop = CancellationToken::new();
    let mut c = common::alerting_config(&db_url, &reg);
    c.oidc = Some(config(jwks_url));
    let (bus, rx) = tokio::sync::mpsc::channel(16);
    let alerting =
        quantrac_alerting::Alerting::start(c, quantrac_alerting::Edge::Bus(rx), None, stop.clone())
            .await
            .expect("alerting");
    let client = |token: String| async move {
        AlertServiceClient::with_interceptor(
            quantrac_testkit::grpc::channel(alerting.grpc_addr).await,
            quantrac_testkit::grpc::Bearer::new(&token),
        )
    };
    let mut officer = client(key.sign("k1", &claims("le.thi.b", &["qt-officer"], |_| {}))).await;
    let mut analyst = client(key.sign("k1", &claims("tran.c", &["qt-analyst"], |_| {}))).await;

    let mut live = analyst
        .subscribe(SubscribeAlertsRequest::default())
        .await
        .expect("an analyst's JWT subscribes")
        .into_inner();
    bus.send(stored_cod(&station, 300.0, 10))
        .await
        .expect("bus");
    let opened = tokio::time::timeout(Duration::from_secs(30), live.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an alert");

    let ack = |note: &str| AcknowledgeAlertRequest {
        alert_id: opened.id.clone(),
        officer: "typed.name".into(),
        note: note.into(),
    };
    let e = analyst
        .acknowledge(ack("not mine to do"))
        .await
        .expect_err("an analyst's JWT acknowledges");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let acked = officer
        .acknowledge(ack("calling the plant"))
        .await
        .expect("an officer's JWT acknowledges")
        .into_inner();
    assert_eq!(acked.state(), AlertState::Acknowledged);
    assert_eq!(acked.acknowledged_by, "oidc:le.thi.b");

    let db = quantrac_testkit::db::connect(&db_url).await;
    let actors: Vec<(String, String)> = db
        .query("SELECT actor, action FROM audit_log ORDER BY sequence", &[])
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        actors,
        vec![
            ("oidc:tran.c".into(), "call_refused".into()),
            ("oidc:le.thi.b".into(), "acknowledge".into()),
        ]
    );
    stop.cancel();
    alerting.wait().await.expect("clean stop");
}
