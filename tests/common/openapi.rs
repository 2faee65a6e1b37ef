//! Checks real answers of a router against its OpenAPI document: the operation must be
//! there, the status among its responses, and the body valid against the schema of its
//! content type.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use serde_json::Value;

use super::Reply;

pub struct Document {
    document: Value,
    paths: matchit::Router<String>,
    validators: Mutex<HashMap<String, jsonschema::Validator>>,
    /// `(template, method)` of every operation an answer was checked against.
    pub seen: Mutex<BTreeSet<(String, String)>>,
}

/// `text` as one JSON Pointer token.
fn token(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

impl Document {
    pub fn new(document: Value) -> Self {
        assert_eq!(document["openapi"], "3.1.0");
        let mut paths = matchit::Router::new();
        for template in document["paths"].as_object().unwrap().keys() {
            paths.insert(template.clone(), template.clone()).unwrap();
        }
        Self {
            document,
            paths,
            validators: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Every `(template, method)` the document has.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (template, item) in self.document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    operations.insert((template.clone(), method.clone()));
                }
            }
        }
        operations
    }

    /// Asserts that `reply`, the answer to `method` on `path` (relative to the router,
    /// without its query), is one the document describes.
    #[track_caller]
    pub fn check(&self, method: &str, path: &str, reply: &Reply) {
        let method = method.to_ascii_lowercase();
        let Ok(matched) = self.paths.at(path) else {
            assert!(
                matches!(reply.status.as_u16(), 401 | 404 | 429),
                "{method} {path}: no such path in the document, yet {}",
                reply.status
            );
            return;
        };
        let template = matched.value.clone();
        let item = &self.document["paths"][&template];
        if item.get(&method).is_none() {
            assert!(
                matches!(reply.status.as_u16(), 401 | 405 | 429),
                "{method} {template}: no such operation, yet {}",
                reply.status
            );
            return;
        }
        self.seen
            .lock()
            .unwrap()
            .insert((template.clone(), method.clone()));
        let mut at = format!(
            "/paths/{}/{method}/responses/{}",
            token(&template),
            reply.status.as_u16()
        );
        let response = self.document.pointer(&at).unwrap_or_else(|| {
            panic!(
                "{method} {template}: status {} is not in the document: {}",
                reply.status, reply.text
            )
        });
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            at = reference.trim_start_matches('#').to_owned();
        }
        let response = self.document.pointer(&at).unwrap();
        let Some(content) = response.get("content") else {
            assert!(
                reply.text.is_empty(),
                "{method} {template}: {} has no body in the document",
                reply.status
            );
            return;
        };
        let content_type = reply.header("content-type").unwrap_or("");
        assert!(
            content.get(content_type).is_some(),
            "{method} {template}: {} as {content_type} is not in the document",
            reply.status
        );
        if !content_type.ends_with("json") {
            return;
        }
        let schema = format!("{at}/content/{}/schema", token(content_type));
        let mut validators = self.validators.lock().unwrap();
        let validator = validators.entry(schema.clone()).or_insert_with(|| {
            // The schema, with the components its references point into.
            let mut root = self.document.pointer(&schema).unwrap().clone();
            root["components"] = self.document["components"].clone();
            jsonschema::options()
                .should_validate_formats(true)
                .build(&root)
                .unwrap()
        });
        let errors: Vec<String> = validator
            .iter_errors(&reply.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {}: the body does not match the document: {errors:?}\n{}",
            reply.status,
            reply.text
        );
    }

    /// Asserts that every operation of the document was checked at least once.
    #[track_caller]
    pub fn assert_every_operation_seen(&self) {
        let seen = self.seen.lock().unwrap().clone();
        let missing: Vec<_> = self.operations().difference(&seen).cloned().collect();
        assert!(missing.is_empty(), "never checked: {missing:?}");
    }
}
