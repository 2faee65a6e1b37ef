//! The example's default store, the SQLite file `nouvel.db`: what survives a restart, and
//! what a kill in the middle of a burst of writes leaves.

mod common;

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::Server;
use serde_json::{json, Value};

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|b| b["code"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[test]
fn keys_states_environments_and_usage_survive_a_restart() {
    let first = Server::start(&[]);
    let account = first.demo_account();
    let keys = format!("/accounts/{account}/keys");
    let (status, kept) = first
        .admin("POST", &keys, r#"{"name": "Kept", "permissions": ["generate", "projects:read"], "environment": "staging"}"#)
        .unwrap();
    assert_eq!(status, 201, "{kept}");
    let (_, off) = first
        .admin(
            "POST",
            &keys,
            r#"{"name": "Off", "permissions": ["generate"]}"#,
        )
        .unwrap();
    let off_id = off["id"].as_str().unwrap();
    assert_eq!(
        first
            .admin("POST", &format!("{keys}/{off_id}/disable"), "")
            .unwrap()
            .0,
        200
    );
    let kept_key = kept["key"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(first.with_key("POST", "/api/v1/generate", kept_key).0, 200);
    }
    // SIGTERM flushes the usage of the last interval.
    first.signal("TERM");
    let (dir, old_demo) = (first.dir.clone(), first.demo_key.clone());
    assert_eq!(first.wait(), Some(0));

    let second = Server::start_in(dir, &[]);
    assert_eq!(second.demo_account(), account, "the demo account is reused");
    assert_ne!(second.demo_key, old_demo, "a fresh demo key");
    let (status, body) = second.with_key("GET", "/api/v1/projects", &old_demo);
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_api_key".to_owned()),
        "the old demo key is deleted"
    );
    assert!(second.status("/api/v1/projects").contains("200"));
    let (status, body) = second.with_key("POST", "/api/v1/generate", kept_key);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""environment":"staging""#), "{body}");
    let (status, body) = second.with_key("POST", "/api/v1/generate", off["key"].as_str().unwrap());
    assert_eq!((status, code(&body)), (401, "disabled_api_key".to_owned()));
    let (_, listed) = second.admin("GET", &keys, "").unwrap();
    let listed = listed["keys"].as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "Demo key").count(),
        1,
        "{names:?}"
    );
    let kept_now = listed.iter().find(|k| k["id"] == kept["id"]).unwrap();
    assert_eq!(kept_now["usage"]["admitted"], 3);
    assert!(kept_now["last_used_at"].is_string());
    assert_eq!(kept_now["environment"], "staging");
    assert_eq!(
        kept_now["permissions"],
        json!(["generate", "projects:read"])
    );
    let off_now = listed.iter().find(|k| k["id"] == off["id"]).unwrap();
    assert_eq!(off_now["status"], "disabled");
    second.signal("TERM");
    assert_eq!(second.wait(), Some(0));
}

#[test]
fn a_kill_in_the_middle_of_a_burst_leaves_every_key_whole_or_absent() {
    let server = Arc::new(Mutex::new(Some(Server::start(&[]))));
    let (account, dir) = {
        let guard = server.lock().unwrap();
        let s = guard.as_ref().unwrap();
        (s.demo_account(), s.dir.clone())
    };
    let keys = format!("/accounts/{account}/keys");
    // Answers received: created keys (id → plaintext), rotations (old id → new key) and
    // deletions.
    let mut created: HashMap<String, String> = HashMap::new();
    let mut rotated: Vec<(String, String, String)> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let pid = server.lock().unwrap().as_ref().unwrap().child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    });
    let guard = server.lock().unwrap();
    let s = guard.as_ref().unwrap();
    for i in 0.. {
        let body = format!(
            r#"{{"name": "Burst {i}", "permissions": ["generate"], "environment": "staging"}}"#
        );
        let Some((status, made)) = s.admin("POST", &keys, &body) else {
            break;
        };
        if status == 409 {
            // The account's cap of live keys: the burst is over before the kill.
            break;
        }
        assert_eq!(status, 201);
        let id = made["id"].as_str().unwrap().to_owned();
        created.insert(id.clone(), made["key"].as_str().unwrap().to_owned());
        let answered = match i % 3 {
            0 => s
                .admin(
                    "POST",
                    &format!("{keys}/{id}/rotate"),
                    r#"{"grace_seconds": 0}"#,
                )
                .map(|(status, new)| {
                    assert_eq!(status, 201);
                    rotated.push((
                        id,
                        new["id"].as_str().unwrap().to_owned(),
                        new["key"].as_str().unwrap().to_owned(),
                    ));
                }),
            1 => s
                .admin("DELETE", &format!("{keys}/{id}"), "")
                .map(|(status, _)| {
                    assert_eq!(status, 204);
                    deleted.push(id);
                }),
            _ => Some(()),
        };
        if answered.is_none() {
            break;
        }
    }
    killer.join().unwrap();
    assert!(
        created.len() > 5,
        "the burst made keys before the kill: {}",
        created.len()
    );
    drop(guard);
    let killed = server.lock().unwrap().take().unwrap();
    let _ = killed.wait();

    let integrity = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
        ])
        .arg(dir.database())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");

    let again = Server::start_in(dir, &[]);
    let (_, listed) = again
        .admin("GET", &format!("{keys}?limit=500"), "")
        .unwrap();
    assert!(listed["next"].is_null(), "one page holds them all");
    let listed = listed["keys"].as_array().unwrap().clone();
    // Every key listed is whole; every key whose creation was answered is listed and works.
    for key in &listed {
        for field in ["id", "name", "prefix", "created_at", "status", "usage"] {
            assert!(!key[field].is_null(), "{field} of {key}");
        }
        assert!(!key["permissions"].as_array().unwrap().is_empty(), "{key}");
    }
    let replaced: HashMap<&str, &str> = rotated
        .iter()
        .map(|(old, new, _)| (old.as_str(), new.as_str()))
        .collect();
    for (id, plaintext) in &created {
        let gone = deleted.contains(id);
        assert_eq!(
            listed.iter().any(|k| k["id"] == id.as_str()),
            !gone,
            "{id}: answered 201, and 204 to its deletion: {gone}"
        );
        let (status, body) = again.with_key("POST", "/api/v1/generate", plaintext);
        let expected = if gone || replaced.contains_key(id.as_str()) {
            401
        } else {
            200
        };
        assert_eq!(status, expected, "{id}: {body}");
    }
    // Each key made is in the audit log once, and each entry's key exists: a change and its
    // entry are written together, or neither.
    let (_, log) = again
        .admin("GET", &format!("/accounts/{account}/audit?limit=500"), "")
        .unwrap();
    assert!(log["next"].is_null(), "one page holds every entry");
    let made: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.created" || e["action"] == "key.rotated")
        .map(|e| {
            if e["action"] == "key.rotated" {
                e["details"]["replacement_id"].as_str().unwrap()
            } else {
                e["key_id"].as_str().unwrap()
            }
        })
        .collect();
    for key in &listed {
        let id = key["id"].as_str().unwrap();
        if key["name"] != "Demo key" {
            assert_eq!(made.iter().filter(|m| **m == id).count(), 1, "{id}'s entry");
        }
    }
    let deleted: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.deleted")
        .map(|e| e["key_id"].as_str().unwrap())
        .collect();
    for id in &made {
        // The first start's demo key was deleted by the second start, with its entry.
        assert!(
            listed.iter().any(|k| k["id"] == *id) || deleted.contains(id),
            "an entry for {id}, which is not there"
        );
    }
    for (old, new, plaintext) in &rotated {
        assert!(
            listed.iter().any(|k| k["id"] == new.as_str()),
            "{old} → {new} lost its replacement"
        );
        assert_eq!(again.with_key("POST", "/api/v1/generate", plaintext).0, 200);
    }
    again.signal("TERM");
    assert_eq!(again.wait(), Some(0));
}

#[test]
fn a_second_server_on_the_same_file_is_refused_naming_it() {
    let first = Server::start(&[]);
    let second = Command::new(common::binary())
        .current_dir(&first.dir.0)
        .env("NOUVEL_ADDR", "127.0.0.1:0")
        .env("NOUVEL_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("nouvel.db"), "{said}");
    assert!(said.contains("PostgreSQL"), "{said}");
    // The first one goes on, its demo key unharmed.
    assert!(first.status("/api/v1/projects").contains("200"));
    first.signal("TERM");
    assert_eq!(first.wait(), Some(0));
}
