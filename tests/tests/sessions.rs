//! Sessions across regions: a session is issued, used, refreshed and revoked
//! where its user logged in, and failed logins count at the user's home too.
//! Real nodes, real gRPC on 127.0.0.1, real data center files.

use meridian_node::limits::LOGIN_FAILURES_PER_USER;
use meridian_tests::in_process::{Mesh, PASSWORD};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roaming_session_is_refreshed_and_revoked_where_it_was_issued() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    // ann (home eu) logs in at us.
    let mut ann = mesh.user("ann@eu", "us").await;
    ann.create_group("lobby").await.unwrap();
    let renewed = ann.refresh().await.unwrap();
    assert_eq!(renewed.region, "us");
    ann.get_group("lobby@us").await.unwrap();

    // Its tokens mean nothing at eu, which never issued them.
    let mut at_eu = mesh.client("eu").await;
    at_eu.set_session(&renewed.session).unwrap();
    let elsewhere = at_eu.get_group("lobby@us").await.unwrap_err();
    assert_eq!(elsewhere.code(), Code::Unauthenticated, "{elsewhere:?}");
    at_eu.set_refresh_token(&renewed.refresh_token);
    assert_eq!(
        at_eu.refresh().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(!at_eu.logout().await.unwrap().revoked);

    // Logging out at us revokes it: that is everywhere it is in use.
    assert!(ann.logout().await.unwrap().revoked);
    let mut again = mesh.client("us").await;
    again.set_session(&renewed.session).unwrap();
    let revoked = again.get_group("lobby@us").await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    again.set_refresh_token(&renewed.refresh_token);
    assert_eq!(
        again.refresh().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_roaming_logins_count_at_the_home_too() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    mesh.client("eu")
        .await
        .register("ann@eu", PASSWORD)
        .await
        .unwrap();
    let mut at_us = mesh.client("us").await;
    for _ in 0..LOGIN_FAILURES_PER_USER {
        let wrong = at_us.login("ann@eu", "not the password").await.unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    }
    // At her home, even the right password now waits.
    let refused = mesh
        .client("eu")
        .await
        .login("ann@eu", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("too many failed logins for ann@eu"),
        "{}",
        refused.message()
    );
    mesh.stop().await;
}
