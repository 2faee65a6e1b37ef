//! Any method and path against the seed's route table, and any template into a table of
//! one's own: an answer, never a panic.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use nouvel_auth::{nouvel, routes::Access, RouteTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method, path) = text.split_once(' ').unwrap_or(("GET", text));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let seed = RouteTable::nouvel();
    let access = seed.access(&method, path);
    if !path.starts_with("/api/v1/") {
        assert!(matches!(access, Access::Denied), "{path}: {access:?}");
    }
    if let Ok(table) = RouteTable::new().route(method.clone(), path, nouvel::GENERATE) {
        let _ = table.access(&method, path);
        let _ = table.access(&Method::HEAD, path);
    }
    let _ = RouteTable::new().public(path).map(|table| table.access(&method, path));
});
