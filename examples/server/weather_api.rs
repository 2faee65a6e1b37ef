//! A weather-data API that is not Nouvel, built as an application copies it: its own key
//! prefix, permissions, plans with their limits, realm, expiry header and error shape, all
//! in one `Profile`.
//!
//! ```sh
//! cargo run --example weather_api
//! ```
//!
//! * Keys `wx_…`; permissions `forecast:read`, `history:read`, `alerts:write`; plans
//!   `free` (no API keys), `pro` (120 requests per 60 s per key), `team` (600).
//! * `GET /api/v1/forecast/{city}` (`forecast:read`), `GET /api/v1/history/{city}`
//!   (`history:read`), `POST /api/v1/alerts` (`alerts:write`), `GET /api/status` (public),
//!   `GET /api/v1/cities` (a short list without a key, the full one with a key). Any other
//!   path under `/api/` is behind the layer too.
//! * Every error, whoever answers it, is `{"error": {"status", "code", "message", …}}`.
//! * The admin API at `/ops`, "Settings → API Keys" at `/settings/api-keys` with the demo
//!   sign-in (its users grant `alerts:write` on the team plan only), `/healthz`.
//!
//! Settings: `WEATHER_ADDR` (default `127.0.0.1:8090`), `WEATHER_ADMIN_TOKEN`,
//! `DATABASE_URL` (default the SQLite file `weather.db`), `REDIS_URL`,
//! `WEATHER_SCHEMA`, `WEATHER_SHUTDOWN_SECONDS`.
#![allow(clippy::print_stdout)] // printing the demo key is this example's job

mod demo;
mod launch;
mod serve;

use std::time::Duration;

use axum::{
    extract::Path,
    http::{header, HeaderName, HeaderValue, Method, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use nouvel_auth::{
    AuthenticatedKey, KeyPrefix, Permission, PermissionSet, Plan, Plans, Problem, Profile,
    RateLimit, RouteTable,
};
use serde_json::{json, Map, Value};

use launch::{Api, Error, Example, Settings};

const PERMISSIONS: &PermissionSet =
    &PermissionSet::new(&["forecast:read", "history:read", "alerts:write"]);
const FORECAST_READ: Permission = PERMISSIONS.permission("forecast:read");
const HISTORY_READ: Permission = PERMISSIONS.permission("history:read");
const ALERTS_WRITE: Permission = PERMISSIONS.permission("alerts:write");

const FREE: Plan = Plan::from_static("free");
const PRO: Plan = Plan::from_static("pro");
const TEAM: Plan = Plan::from_static("team");

const PREFIX: KeyPrefix = match KeyPrefix::new("wx_") {
    Ok(prefix) => prefix,
    Err(_) => panic!("a key prefix"),
};

/// The application, described once.
fn profile() -> Profile {
    let per_minute = |requests| RateLimit::new(requests, Duration::from_secs(60));
    Profile::new(
        PERMISSIONS,
        Plans::new([FREE, PRO, TEAM]).api_keys_on([PRO, TEAM]),
        PREFIX,
    )
    .product("Weather")
    .realm("weather")
    .expiry_header(HeaderName::from_static("weather-key-expires-at"))
    .plan_limits(PRO, per_minute(120))
    .plan_limits(TEAM, per_minute(600))
    .responder(errors)
}

/// Every error of this server, in its own shape: `{"error": {"status", "code", "message",
/// …the members of its kind}}`, the headers of its kind kept.
fn errors(problem: &Problem, default: Response<Bytes>) -> Response<Bytes> {
    let mut error = Map::new();
    error.insert("status".into(), problem.status().as_u16().into());
    error.insert("code".into(), problem.code().into());
    error.insert("message".into(), problem.detail().into());
    error.extend(problem.extra().clone());
    let (mut parts, _) = default.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Bytes::from(json!({ "error": error }).to_string()))
}

/// Who asked: the key, its account and environment, or nulls without a key.
fn caller(key: Option<&AuthenticatedKey>) -> Value {
    json!({
        "key_id": key.map(|k| &k.id),
        "account_id": key.map(|k| &k.account_id),
        "environment": key.and_then(|k| k.environment.as_ref()),
    })
}

async fn forecast(key: AuthenticatedKey, Path(city): Path<String>) -> Json<Value> {
    Json(json!({"city": city, "forecast": "sunny", "caller": caller(Some(&key))}))
}

async fn history(key: AuthenticatedKey, Path(city): Path<String>) -> Json<Value> {
    Json(json!({"city": city, "history": [], "caller": caller(Some(&key))}))
}

async fn alert(key: AuthenticatedKey) -> Json<Value> {
    Json(json!({"alert": "created", "caller": caller(Some(&key))}))
}

async fn cities(key: Option<AuthenticatedKey>) -> Json<Value> {
    let cities = match key {
        Some(_) => vec!["Lisbon", "Oslo", "Quito", "Reykjavik", "Wellington"],
        None => vec!["Lisbon", "Oslo"],
    };
    Json(json!({"cities": cities, "caller": caller(key.as_ref())}))
}

struct WeatherApi;

impl Api for WeatherApi {
    fn routes(&self) -> Router {
        Router::new()
            .route("/v1/forecast/{city}", get(forecast))
            .route("/v1/history/{city}", get(history))
            .route("/v1/alerts", post(alert))
            .route("/v1/cities", get(cities))
            .route("/status", get(|| async { Json(json!({"status": "ok"})) }))
    }

    fn table(&self) -> RouteTable {
        RouteTable::new()
            .route(Method::GET, "/api/v1/forecast/{city}", FORECAST_READ)
            .and_then(|t| t.route(Method::GET, "/api/v1/history/{city}", HISTORY_READ))
            .and_then(|t| t.route(Method::POST, "/api/v1/alerts", ALERTS_WRITE))
            .and_then(|t| t.optional("/api/v1/cities"))
            .and_then(|t| t.public("/api/status"))
            .expect("the route table's templates are valid")
    }

    fn settings(&self, settings: Settings) -> Settings {
        // Alerts are the team plan's: other accounts' users may not grant them.
        settings.grantable(|_user, account| {
            let all = PERMISSIONS.all();
            if account.plan == TEAM {
                all
            } else {
                all.without(ALERTS_WRITE)
            }
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let example = Example {
        title: "Weather API example",
        env: "WEATHER",
        default_addr: "127.0.0.1:8090",
        default_file: "weather.db",
        default_schema: "weather",
        profile: profile(),
        demo_plan: PRO,
        demo_key_says: "Demo key (pro plan, all three permissions, expires in 90 days):",
        admin_at: "/ops",
        try_path: "/api/v1/forecast/lisbon",
    };
    example.run(WeatherApi).await
}
