//! The OpenAPI 3.1 documents of both routers, built from one description: the key routes,
//! bodies, Keys and problems are written once and appear in both documents, as the routers
//! share their handlers. Tests check every answer of the routers against them.

use serde_json::{json, Map, Value};

use crate::Profile;

/// Which router a document describes.
#[cfg_attr(
    not(all(feature = "admin", feature = "settings")),
    allow(dead_code, reason = "each feature builds one of the routers")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// The operator's: behind the admin token, accounts in the path.
    Admin,
    /// The signed-in user's: the session names the account.
    Settings,
}

/// The document of `api`, for an application speaking `profile`.
pub(crate) fn document(api: Api, profile: &Profile) -> Value {
    let mut paths = Map::new();
    let keys = match api {
        Api::Admin => {
            paths.insert(
                "/accounts".into(),
                json!({"post": op("Creates an account.", Some("CreateAccount"), &[(201, "Account")], &[400, 408, 413, 422])}),
            );
            paths.insert(
                "/accounts/{account_id}".into(),
                json!({
                    "parameters": [id("account_id")],
                    "get": op("Reads an account.", None, &[(200, "Account")], &[404]),
                    "patch": op("Changes an account's plan.", Some("SetPlan"), &[(200, "Account")], &[400, 404, 408, 413, 422]),
                }),
            );
            "/accounts/{account_id}/keys"
        }
        Api::Settings => {
            let html = json!({"text/html; charset=utf-8": {"schema": {"type": "string"}}});
            paths.insert(
                "/".into(),
                json!({"get": {
                    "summary": "The Settings → API Keys page (the mount point itself, no trailing slash).",
                    "responses": {
                        "200": {"description": "The page", "content": html},
                        "401": {"description": "A page that says to sign in", "content": html},
                    },
                }}),
            );
            for (asset, content_type) in [
                ("/assets/settings.js", "text/javascript; charset=utf-8"),
                ("/assets/settings.css", "text/css; charset=utf-8"),
            ] {
                paths.insert(
                    asset.into(),
                    json!({"get": {
                        "summary": "The page's script or style sheet (public).",
                        "security": [],
                        "responses": {"200": {"description": "The file", "content": {content_type: {"schema": {"type": "string"}}}}},
                    }}),
                );
            }
            paths.insert(
                "/account".into(),
                json!({"get": op("The signed-in user's account.", None, &[(200, "AccountView")], &[])}),
            );
            "/keys"
        }
    };
    let account_id = (api == Api::Admin).then(|| id("account_id"));
    let with = |extra: Value| -> Value {
        let mut params: Vec<Value> = account_id.iter().cloned().collect();
        params.push(extra);
        Value::Array(params)
    };
    let mut list = op(
        "The account's keys, newest first.",
        None,
        &[(200, "KeyList")],
        &[404, 422],
    );
    list["parameters"] = json!([
        {"name": "environment", "in": "query", "required": false,
         "description": "Only the keys for this environment.",
         "schema": {"$ref": "#/components/schemas/Environment"}},
        {"name": "limit", "in": "query", "required": false, "description": "Keys per page, default 100.",
         "schema": {"type": "integer", "minimum": 1, "maximum": crate::manage::manager::MAX_PAGE}},
        {"name": "before", "in": "query", "required": false, "description": "The `next` cursor of the page before.",
         "schema": {"type": "string"}},
    ]);
    let mut collection = json!({
        "get": list,
        "post": op("Creates a key; the response is the only time its plaintext is shown.", Some("CreateKey"), &[(201, "NewKey")], &[400, 402, 404, 408, 409, 413, 422]),
    });
    if let Some(account_id) = &account_id {
        collection["parameters"] = json!([account_id]);
    }
    paths.insert(keys.into(), collection);
    paths.insert(
        format!("{keys}/{{key_id}}"),
        json!({
            "parameters": with(id("key_id")),
            "get": op("Reads a key.", None, &[(200, "Key")], &[404]),
            "delete": op("Deletes a key: it is refused from the next request on.", None, &[(204, "")], &[404]),
        }),
    );
    paths.insert(
        format!("{keys}/{{key_id}}/rotate"),
        json!({
            "parameters": with(id("key_id")),
            "post": op("Replaces a key; the old one keeps working for the grace.", Some("Rotate"), &[(201, "NewKey")], &[400, 402, 404, 408, 409, 413, 422]),
        }),
    );
    let mut usage = op(
        "The key's usage by hour or by day over a range, every bucket included; CSV with `Accept: text/csv`.",
        None,
        &[(200, "KeyUsage")],
        &[404, 422],
    );
    usage["responses"]["200"]["content"]["text/csv; charset=utf-8"] = json!({
        "schema": {"type": "string", "description": "A header line `start,admitted,plan_required,missing_permission,route_not_allowed,rate_limited`, then a line per bucket."},
    });
    usage["parameters"] = json!([
        {"name": "granularity", "in": "query", "required": false, "description": "`hour` (default) or `day`.",
         "schema": {"enum": ["hour", "day"]}},
        {"name": "from", "in": "query", "required": false,
         "description": "RFC 3339, rounded down to its bucket's start; default 24 hours or 30 days before `to`.",
         "schema": {"type": "string", "format": "date-time"}},
        {"name": "to", "in": "query", "required": false,
         "description": "RFC 3339, rounded down to its bucket's start; default the end of the current bucket. At most 840 hourly or 400 daily buckets.",
         "schema": {"type": "string", "format": "date-time"}},
    ]);
    paths.insert(
        format!("{keys}/{{key_id}}/usage"),
        json!({"parameters": with(id("key_id")), "get": usage}),
    );
    for (action, summary) in [
        (
            "disable",
            "Disables a key: 401 `disabled_api_key` until enabled.",
        ),
        ("enable", "Enables a disabled key."),
    ] {
        paths.insert(
            format!("{keys}/{{key_id}}/{action}"),
            json!({
                "parameters": with(id("key_id")),
                "post": op(summary, None, &[(200, "Key")], &[404]),
            }),
        );
    }
    let audit = match api {
        Api::Admin => "/accounts/{account_id}/audit",
        Api::Settings => "/audit",
    };
    let mut log = op(
        "The account's audit log, newest first, a page at a time.",
        None,
        &[(200, "AuditPage")],
        &[404, 422],
    );
    log["parameters"] = json!([
        {"name": "limit", "in": "query", "required": false, "description": "Entries per page, default 50.",
         "schema": {"type": "integer", "minimum": 1, "maximum": crate::manage::manager::MAX_PAGE}},
        {"name": "before", "in": "query", "required": false, "description": "The `next` cursor of the page before.",
         "schema": {"type": "string"}},
    ]);
    let mut item = json!({"get": log});
    if let Some(account_id) = &account_id {
        item["parameters"] = json!([account_id]);
    }
    paths.insert(audit.into(), item);
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "summary": "This document.",
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}},
        }}),
    );

    let (title, description, unauthorized, extra_errors) = match api {
        Api::Admin => (
            "API key administration",
            "The operator's API: every route needs `Authorization: Bearer <admin token>`. Errors are checked in the order 401, 404, 409 `already_rotated`, 400/408/413/422, 402, 409 `too_many_keys`.",
            "admin_unauthorized",
            json!({"429": {"$ref": "#/components/responses/TooManyFailures"}}),
        ),
        Api::Settings => (
            "API key settings",
            "Settings → API Keys for the signed-in user: the application's session names the account. Every POST, PUT, PATCH and DELETE needs an `Origin` equal to the request's own (or `Sec-Fetch-Site: same-origin`), else 403 `csrf_rejected`. API keys never open it.",
            "not_signed_in",
            json!({"403": {"$ref": "#/components/responses/CsrfRejected"}}),
        ),
    };
    // Every operation may answer these.
    for (path, item) in &mut paths {
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            // The page and its files are not JSON routes: they answer as they say.
            if method == "parameters" || path == "/" || path.starts_with("/assets/") {
                continue;
            }
            let responses = &mut operation["responses"];
            responses["401"] = json!({"$ref": "#/components/responses/Unauthorized"});
            responses["405"] = json!({"$ref": "#/components/responses/MethodNotAllowed"});
            responses["503"] = json!({"$ref": "#/components/responses/Unavailable"});
            for (status, response) in extra_errors.as_object().into_iter().flatten() {
                if api == Api::Admin || method != "get" {
                    responses[status] = response.clone();
                }
            }
        }
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": env!("CARGO_PKG_VERSION"), "description": description},
        "paths": paths,
        "components": components(api, profile, unauthorized),
    });
    if api == Api::Admin {
        document["components"]["securitySchemes"] = json!({"admin": {"type": "http", "scheme": "bearer", "description": "The admin token."}});
        document["security"] = json!([{"admin": []}]);
    }
    document
}

/// A path parameter: an opaque id.
fn id(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// An operation taking the `body` schema (optional for rotations), answering `ok`
/// (status and schema; an empty schema name is no body) and the problems `errors`.
fn op(summary: &str, body: Option<&str>, ok: &[(u16, &str)], errors: &[u16]) -> Value {
    let mut responses = Map::new();
    for (status, schema) in ok {
        let response = if schema.is_empty() {
            json!({"description": "No content"})
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
        };
        responses.insert(status.to_string(), response);
    }
    for status in errors {
        let name = match status {
            400 => "MalformedJson",
            402 => "PlanRequired",
            404 => "NotFound",
            408 => "RequestTimeout",
            409 => "Conflict",
            413 => "PayloadTooLarge",
            _ => "Invalid",
        };
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    let mut operation = json!({"summary": summary, "responses": responses});
    if let Some(body) = body {
        operation["requestBody"] = json!({
            "required": body != "Rotate",
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}},
        });
    }
    operation
}

/// A problem+json response whose `code` is one of `codes`, with `extra` members.
fn problem(description: &str, codes: &[&str], extra: Value) -> Value {
    let mut schema = json!({
        "allOf": [{"$ref": "#/components/schemas/Problem"}],
    });
    let mut own = json!({"properties": {"code": {"enum": codes}}});
    if let Value::Object(extra) = extra {
        let required: Vec<&String> = extra.keys().collect();
        own["required"] = json!(required);
        for (name, member) in &extra {
            own["properties"][name] = member.clone();
        }
    }
    if let Some(all) = schema["allOf"].as_array_mut() {
        all.push(own);
    }
    json!({"description": description, "content": {"application/problem+json": {"schema": schema}}})
}

fn components(api: Api, profile: &Profile, unauthorized: &str) -> Value {
    let permissions: Vec<&str> = profile.permissions().names().to_vec();
    let plans: Vec<&str> = profile
        .plans()
        .known()
        .iter()
        .map(crate::Plan::as_str)
        .collect();
    let plan = if plans.is_empty() {
        json!({"type": "string", "minLength": 1, "maxLength": 64})
    } else {
        json!({"enum": plans})
    };
    let time = json!({"type": "string", "format": "date-time"});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let count = json!({"type": "integer", "minimum": 0});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 100});
    let expiration = json!({
        "description": "A preset, or an RFC 3339 date in the future (at most 9999-12-31T23:59:59Z). Absent or null: `90d` (on a rotation, the old key's option).",
        "anyOf": [{"enum": ["7d", "30d", "90d", "1y", "never"]}, {"type": "string", "format": "date-time"}, {"type": "null"}],
    });
    let requests = json!({"type": "integer", "minimum": 1, "maximum": u32::MAX});
    let scope = json!({"enum": ["key", "account"], "description": "Whose requests it counts: the key's (the default) or every key's of the account together."});
    let window_seconds = json!({"type": "integer", "minimum": 1, "maximum": 86_400});
    let period = json!({"enum": ["day", "month"], "description": "A calendar day or month, UTC."});
    let window = json!({"type": "object", "additionalProperties": false, "required": ["requests", "window_seconds"],
        "properties": {"requests": requests, "window_seconds": window_seconds, "scope": scope}});
    let rate_limit = json!({
        "description": "A sliding window (`window_seconds`) or a calendar quota (`period`).",
        "oneOf": [
            window,
            {"type": "object", "additionalProperties": false, "required": ["requests", "period"],
             "properties": {"requests": requests, "period": period, "scope": scope}},
        ],
    });
    let rate_limits = json!({
        "type": "array", "minItems": 1, "maxItems": 4, "items": rate_limit,
        "description": "At most one limit per scope and period (or window length); a request is admitted only if every one admits it.",
    });
    let limit_info = json!({
        "description": "A limit as `rate_limit` describes it; a calendar quota also says how much of its current period is used (as recorded, at most one usage flush behind) and when it starts again.",
        "oneOf": [
            window,
            {"type": "object", "additionalProperties": false, "required": ["requests", "period", "used", "resets_at"],
             "properties": {"requests": requests, "period": period, "scope": scope, "used": count, "resets_at": time}},
        ],
    });
    let networks = json!({
        "type": ["array", "null"], "maxItems": 16,
        "items": {"type": "string", "description": "An IPv4 or IPv6 address (one host) or network in CIDR form with no host bits set: `203.0.113.0/24`, `2001:db8::/32`."},
    });
    let mut create_key = json!({
        "type": "object", "additionalProperties": false, "required": ["name", "permissions"],
        "properties": {
            "name": name,
            "permissions": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Permission"}},
            "expiration": expiration,
            "environment": {"anyOf": [{"$ref": "#/components/schemas/Environment"}, {"type": "null"}]},
            "allowed_networks": with_description(&networks, "The networks the key may be used from (at most 16); absent, null or empty: anywhere. A request from elsewhere gets 403 `network_not_allowed`."),
        },
    });
    if api == Api::Admin {
        create_key["properties"]["rate_limits"] = json!({"anyOf": [rate_limits, {"type": "null"}], "description": "The key's own limits instead of its plan's; not with `rate_limit`."});
        create_key["properties"]["rate_limit"] = json!({"anyOf": [rate_limit, {"type": "null"}], "description": "One limit of the key's own: the same as a `rate_limits` of one."});
    }
    let key_properties = json!({
        "id": {"type": "string"},
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "The key prefix and the next four characters."},
        "permissions": {"type": "array", "items": {"$ref": "#/components/schemas/Permission"}},
        "created_at": time,
        "last_used_at": nullable_time,
        "expires_at": nullable_time,
        "status": {"enum": ["active", "expired", "disabled"]},
        "environment": {"anyOf": [{"$ref": "#/components/schemas/Environment"}, {"type": "null"}]},
        "replaced_by": {"type": ["string", "null"], "description": "The replacement's id, once the key has been rotated; a rotated key cannot be rotated again."},
        "allowed_networks": {"type": ["array", "null"], "items": {"type": "string"}, "description": "The networks (CIDR) it may be used from; null: anywhere."},
        "exposure": {
            "anyOf": [{
                "type": "object",
                "additionalProperties": false,
                "required": ["url", "source", "at"],
                "properties": {"url": {"type": "string"}, "source": {"type": "string"}, "at": time},
            }, {"type": "null"}],
            "description": "Where a secret scanner found the key in public; such a key is disabled (unless the application only reports them). Null if none did.",
        },
        "rate_limits": {"type": "array", "items": limit_info, "description": "The limits its requests are held to: its own, or its plan's."},
        "rate_limit": {"anyOf": [window, {"type": "null"}], "description": "The first sliding window of `rate_limits`; null if it has none."},
        "usage": {"$ref": "#/components/schemas/Usage"},
        "permissions_last_used": {
            "type": "object",
            "additionalProperties": {"anyOf": [time, {"type": "null"}]},
            "description": "When each granted permission was last used by an admitted request whose route needed it; null for never.",
        },
        "hints": {"type": "array", "items": {"$ref": "#/components/schemas/Hint"}, "description": "What the key's owner should look at now, computed when read."},
    });
    let key_required: Vec<&String> = key_properties
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let mut new_key_properties = key_properties.clone();
    new_key_properties["key"] =
        json!({"type": "string", "description": "The plaintext key, shown this once."});
    let mut new_key_required = key_required.clone();
    let key_member = "key".to_owned();
    new_key_required.push(&key_member);
    json!({
        "schemas": {
            "Permission": {"enum": permissions},
            "Plan": plan,
            "Environment": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"},
            "Account": {
                "type": "object", "additionalProperties": false, "required": ["id", "name", "plan", "created_at"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "plan": {"$ref": "#/components/schemas/Plan"}, "created_at": time},
            },
            "AccountView": {
                "type": "object", "additionalProperties": false, "required": ["id", "name", "plan", "api_keys_allowed", "grantable_permissions"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "plan": {"$ref": "#/components/schemas/Plan"}, "api_keys_allowed": {"type": "boolean"}, "grantable_permissions": {"type": "array", "items": {"$ref": "#/components/schemas/Permission"}}},
            },
            "CreateAccount": {
                "type": "object", "additionalProperties": false, "required": ["name", "plan"],
                "properties": {"name": name, "plan": {"$ref": "#/components/schemas/Plan"}},
            },
            "SetPlan": {
                "type": "object", "additionalProperties": false, "required": ["plan"],
                "properties": {"plan": {"$ref": "#/components/schemas/Plan"}},
            },
            "CreateKey": create_key,
            "Rotate": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "grace_seconds": {"type": ["integer", "null"], "minimum": 0, "maximum": 31_536_000, "description": "How long the old key keeps working; absent or null: 86400; 0 = now."},
                    "expiration": expiration,
                    "permissions": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/Permission"}, "minItems": 1, "description": "The replacement's permissions (a set: a name given twice counts once), a subset of the old key's; absent or null: the old key's."},
                    "allowed_networks": with_description(&networks, "The replacement's networks; absent: the old key's; null or empty: anywhere."),
                },
            },
            "Rejected": {
                "type": "object", "additionalProperties": false,
                "required": ["plan_required", "missing_permission", "route_not_allowed", "rate_limited"],
                "properties": {"plan_required": count, "missing_permission": count, "route_not_allowed": count, "rate_limited": count},
            },
            "Usage": {
                "type": "object", "additionalProperties": false, "required": ["admitted", "rejected", "last_request_at"],
                "properties": {
                    "admitted": count,
                    "rejected": {"$ref": "#/components/schemas/Rejected"},
                    "last_request_at": nullable_time,
                },
            },
            "UsageBucket": {
                "type": "object", "additionalProperties": false, "required": ["start", "admitted", "rejected"],
                "properties": {"start": time, "admitted": count, "rejected": {"$ref": "#/components/schemas/Rejected"}},
            },
            "KeyUsage": {
                "type": "object", "additionalProperties": false,
                "required": ["key_id", "granularity", "from", "to", "buckets"],
                "properties": {
                    "key_id": {"type": "string"},
                    "granularity": {"enum": ["hour", "day"]},
                    "from": time,
                    "to": time,
                    "buckets": {"type": "array", "items": {"$ref": "#/components/schemas/UsageBucket"}, "description": "Every bucket in [from, to), oldest first, zeros included."},
                },
            },
            "Hint": {
                "type": "object", "additionalProperties": false, "required": ["code", "message"],
                "properties": {
                    "code": {"enum": ["unused", "unused_permissions", "many_rejections", "rotation_due", "never_expires", "expires_soon"]},
                    "message": {"type": "string"},
                    "permissions": {"type": "array", "items": {"$ref": "#/components/schemas/Permission"}, "description": "The permissions an `unused_permissions` hint is about."},
                },
            },
            "Key": {"type": "object", "additionalProperties": false, "required": key_required, "properties": key_properties},
            "NewKey": {"type": "object", "additionalProperties": false, "required": new_key_required, "properties": new_key_properties},
            "AuditEntry": {
                "type": "object", "additionalProperties": false,
                "required": ["id", "at", "action", "account_id", "key_id", "actor", "details"],
                "properties": {
                    "id": {"type": "string"},
                    "at": time,
                    "action": {"enum": ["account.created", "account.plan_changed", "key.created", "key.rotated", "key.deleted", "key.disabled", "key.enabled", "key.exposed"]},
                    "account_id": {"type": "string"},
                    "key_id": {"type": ["string", "null"]},
                    "actor": {
                        "type": "object", "additionalProperties": false, "required": ["kind", "id"],
                        "properties": {"kind": {"enum": ["admin", "user", "system", "scanner"]}, "id": {"type": ["string", "null"]}},
                    },
                    "details": {"type": "object"},
                },
            },
            "AuditPage": {
                "type": "object", "additionalProperties": false, "required": ["entries", "next"],
                "properties": {
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                    "next": {"type": ["string", "null"]},
                },
            },
            "KeyList": {
                "type": "object", "additionalProperties": false, "required": ["keys", "next"],
                "properties": {
                    "keys": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}},
                    "next": {"type": ["string", "null"]},
                },
            },
            "Problem": {
                "type": "object", "required": ["type", "title", "status", "detail", "code"],
                "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}, "code": {"type": "string"},
                },
            },
        },
        "responses": {
            "Unauthorized": problem("Not signed in, or not the admin token.", &[unauthorized], Value::Null),
            "MalformedJson": problem("The body is not JSON.", &["malformed_json"], Value::Null),
            "PlanRequired": problem("The account's plan has no API keys.", &["plan_required"], json!({"plan": {"$ref": "#/components/schemas/Plan"}, "required_plans": {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}}})),
            "NotFound": problem("No such route, account, or key in this account.", &["not_found"], Value::Null),
            "Conflict": {
                "description": "The key has a replacement already, or the account holds as many live keys as it may.",
                "content": {"application/problem+json": {"schema": {"oneOf": [
                    problem("", &["already_rotated"], Value::Null)["content"]["application/problem+json"]["schema"].clone(),
                    problem("", &["too_many_keys"], json!({"max_keys": {"type": "integer", "minimum": 0}}))["content"]["application/problem+json"]["schema"].clone(),
                ]}}},
            },
            "PayloadTooLarge": problem("The body is over 64 KiB.", &["payload_too_large"], Value::Null),
            "RequestTimeout": problem("The body did not arrive within 30 seconds.", &["request_timeout"], Value::Null),
            "Invalid": problem("Some fields cannot be accepted; every one is listed.", &["invalid_request"], json!({"errors": {
                "type": "array", "minItems": 1,
                "items": {"type": "object", "additionalProperties": false, "required": ["field", "reason"], "properties": {"field": {"type": "string"}, "reason": {"type": "string"}}},
            }})),
            "MethodNotAllowed": problem("The path does not take this method; see `Allow`.", &["method_not_allowed"], Value::Null),
            "Unavailable": problem("The key store is unavailable.", &["auth_unavailable"], Value::Null),
            "TooManyFailures": problem("Too many failed authentications from this address.", &["too_many_failures"], Value::Null),
            "CsrfRejected": problem("A request that changes something came from another origin.", &["csrf_rejected"], Value::Null),
        },
    })
}

/// `schema` with `description`.
fn with_description(schema: &Value, description: &str) -> Value {
    let mut described = schema.clone();
    described["description"] = Value::from(description);
    described
}
