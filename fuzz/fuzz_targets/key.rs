//! Any text as a key and as a key prefix: an answer, never a panic; what parses is
//! well-formed and parses again the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nouvel_auth::{key::ApiKey, KeyPrefix};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ApiKey::parse(text) {
        assert_eq!(key.expose_secret(), text);
        assert!(text.starts_with("nvl_"));
        assert_eq!(ApiKey::parse(key.expose_secret()).map(|k| k.digest()), Ok(key.digest()));
        assert!(key.display_prefix().len() <= 8);
    }
    let (prefix, rest) = text.split_once(' ').unwrap_or((text, ""));
    if let Ok(prefix) = KeyPrefix::new(prefix) {
        let made = prefix.generate();
        assert_eq!(prefix.parse(made.expose_secret()).map(|k| k.digest()), Ok(made.digest()));
        let _ = prefix.parse(rest);
    }
});
