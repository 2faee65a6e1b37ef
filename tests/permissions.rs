//! The full permission matrix: each single permission against each of the seven routes.

mod common;

use common::{Harness, ROUTES};
use nouvel_auth::nouvel;

#[tokio::test]
async fn each_permission_opens_exactly_its_routes() {
    let h = Harness::new().await;
    let mut cases = 0;
    for held in nouvel::PERMISSIONS.all() {
        let key = h.key([held]).await;
        for (method, path, needed) in ROUTES {
            let reply = h.send_key(method, path, &key).await;
            if held == needed {
                assert_eq!(
                    reply.status, 200,
                    "{held} on {method} {path}: {}",
                    reply.text
                );
                assert_eq!(reply.body["route"], path);
            } else {
                reply.assert_problem(403, "missing_permission");
                assert_eq!(
                    reply.body["required_permission"],
                    needed.as_str(),
                    "{method} {path}"
                );
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 35);
}

#[tokio::test]
async fn path_parameters_match_any_segment_but_not_deeper_paths() {
    let h = Harness::new().await;
    let key = h.key([nouvel::PROJECTS_READ, nouvel::PUBLISH]).await;
    for path in [
        "/api/v1/jobs/1",
        "/api/v1/jobs/job_abc-DEF",
        "/api/v1/publish/p%20q",
    ] {
        assert_eq!(h.send_key("GET", path, &key).await.status, 200, "{path}");
    }
    for path in ["/api/v1/jobs/1/logs", "/api/v1/jobs/", "/api/v1/jobs"] {
        h.send_key("GET", path, &key)
            .await
            .assert_problem(403, "route_not_allowed");
    }
}

#[tokio::test]
async fn head_is_treated_as_get() {
    let h = Harness::new().await;
    let reader = h.key([nouvel::PROJECTS_READ]).await;
    let generator = h.key([nouvel::GENERATE]).await;
    assert_eq!(
        h.send_key("HEAD", "/api/v1/projects", &reader).await.status,
        200
    );
    assert_eq!(
        h.send_key("HEAD", "/api/v1/jobs/7", &reader).await.status,
        200
    );
    let refused = h.send_key("HEAD", "/api/v1/projects", &generator).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer realm="nouvel", error="insufficient_scope", scope="projects:read""#)
    );
    // HEAD is not POST: a HEAD on a POST-only route is in no entry.
    let all = h.all_permissions_key().await;
    assert_eq!(
        h.send_key("HEAD", "/api/v1/generate", &all).await.status,
        403
    );
}
