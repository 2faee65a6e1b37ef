//! The layer is plain tower: any request and response body, any inner service, and a
//! service that a hyper server can run; served by axum, it keeps one limit per key across
//! connections and routes.

mod common;

use nouvel_auth::nouvel;
use nouvel_auth::Profile;
use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use nouvel_auth::{middleware::NouvelAuth, NouvelAuthLayer, RateLimit};
use tower::{service_fn, Layer, ServiceExt};

fn assert_fits_axum<T: Clone + Send + Sync + 'static>(_: &T) {}

#[tokio::test]
async fn wraps_a_service_fn_with_its_own_body_types() {
    let (store, key) = common::store_with_key(nouvel::PUBLISH).await;

    let inner = service_fn(|request: Request<Full<Bytes>>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(Full::new(body)))
    });
    let service: NouvelAuth<_, _, _> = NouvelAuthLayer::new(store).layer(inner);
    assert_fits_axum(&service);

    let request = Request::post("/api/v1/publish")
        .header("authorization", common::bearer(&key.key))
        .body(Full::new(Bytes::from_static(b"echo me")))
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "echo me"
    );

    let request = Request::post("/api/v1/publish")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(br#"{"type":"about:blank","title":"Unauthorized","status":401"#));
}

#[tokio::test]
async fn serves_over_a_real_hyper_connection() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (store, key) = common::store_with_key(nouvel::GENERATE).await;
    let inner = service_fn(|_request: Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"generated"))))
    });
    let service = NouvelAuthLayer::new(store).layer(inner);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let hyper_service = hyper_util::service::TowerToHyperService::new(service);
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), hyper_service)
            .await
            .unwrap();
    });

    let request = Request::post("/api/v1/generate")
        .header("authorization", common::bearer(&key.key))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send_on_a_new_connection(addr, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-ratelimit-remaining"], "59");
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "generated"
    );
}

#[tokio::test]
async fn under_axum_serve_one_limit_holds_across_connections_and_routes() {
    // axum applies the layer to each route again for every connection: all of those
    // services must count in the one limiter.
    let (store, key) = common::store_with_key(nouvel::PROJECTS_READ).await;
    let limit = RateLimit::new(2, Duration::from_secs(60));
    let app = common::routes().layer(Profile::nouvel().default_limits(limit).layer(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut statuses = Vec::new();
    for path in [
        "/api/v1/projects",
        "/api/v1/jobs/job_42",
        "/api/v1/projects",
    ] {
        let request = Request::get(path)
            .header("authorization", common::bearer(&key.key))
            .body(Full::new(Bytes::new()))
            .unwrap();
        statuses.push(send_on_a_new_connection(addr, request).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// Sends `request` to `addr` over a connection of its own, which ends with it.
async fn send_on_a_new_connection(
    addr: SocketAddr,
    mut request: Request<Full<Bytes>>,
) -> Response<hyper::body::Incoming> {
    use hyper_util::rt::TokioIo;

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    request
        .headers_mut()
        .insert("host", addr.to_string().parse().unwrap());
    sender.send_request(request).await.unwrap()
}

#[tokio::test]
async fn with_cors_outside_a_preflight_is_answered_and_the_limit_headers_are_readable() {
    use axum::{routing::post, Router};
    use http::{header, HeaderValue, Method};
    use tower_http::cors::CorsLayer;

    let (store, key) = common::store_with_key(nouvel::GENERATE).await;
    let mut exposed: Vec<http::HeaderName> = nouvel_auth::limit::RATE_LIMIT_HEADERS.to_vec();
    exposed.extend([
        header::RETRY_AFTER,
        http::HeaderName::from_static("nouvel-key-expires-at"),
    ]);
    let cors = CorsLayer::new()
        .allow_origin(HeaderValue::from_static("https://app.example"))
        .allow_methods([Method::POST])
        .allow_headers([header::AUTHORIZATION])
        .expose_headers(exposed);
    let app = Router::new()
        .route("/api/v1/generate", post(|| async { "generated" }))
        .layer(NouvelAuthLayer::new(store))
        .layer(cors);

    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v1/generate")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(preflight).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );

    let request = Request::post("/api/v1/generate")
        .header(header::ORIGIN, "https://app.example")
        .header(header::AUTHORIZATION, common::bearer(&key.key))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let exposed = response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("x-ratelimit-remaining"), "{exposed}");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "59");
}
