//! What the fuzz targets (`fuzz/`, `scripts/fuzz`) found, kept as regression tests.

use http::Method;
use nouvel_auth::{nouvel, RouteTable};

/// `fuzz/fuzz_targets/routes.rs`: a template with more than 25 parameters made the
/// router (`matchit`) panic inside `RouteTable::route`; it is an error now.
#[test]
fn a_template_with_too_many_parameters_is_refused_not_a_panic() {
    let many: String = (0..26).map(|i| format!("/{{p{i}}}")).collect();
    let error = RouteTable::new()
        .route(Method::GET, &many, nouvel::GENERATE)
        .unwrap_err();
    assert!(
        error.to_string().contains("more than 25 parameters"),
        "{error}"
    );
    assert!(RouteTable::new().public(&many).is_err());
    // The crashing input itself.
    let found = "{#{\0{#}/api/]]|9{#{\0{#}/ap|8{\0{#}/api/]]|9api/]]|9{#{\0{#}/a\0{#}/api/]]v9";
    let _ = RouteTable::new().route(Method::GET, found, nouvel::GENERATE);
    // 25 are fine, and escaped braces are not parameters.
    let most: String = (0..25).map(|i| format!("/{{p{i}}}")).collect();
    assert!(RouteTable::new()
        .route(Method::GET, &most, nouvel::GENERATE)
        .is_ok());
    let escaped: String = (0..30).map(|i| format!("/{{{{{i}}}}}")).collect();
    assert!(RouteTable::new()
        .route(Method::GET, &escaped, nouvel::GENERATE)
        .is_ok());
}
