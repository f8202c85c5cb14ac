//! Backup verbs through the real binary: `export` then `import` into another segment
//! reproduces the tree, statuses, dependencies, documents and sets; `snapshot` makes the
//! daemon compact its journal; `import` refuses what is not an export.

mod common;

use common::Daemon;
use serde_json::Value;

/// What must survive an export/import round trip, independent of UUIDs.
fn shape(export: &Value) -> Vec<String> {
    let nodes = export["nodes"].as_array().unwrap();
    let name_of =
        |uuid: &str| nodes.iter().find(|n| n["uuid"] == uuid).map(|n| n["name"].as_str().unwrap().to_string());
    let mut v: Vec<String> = nodes
        .iter()
        .filter(|n| n["kind"] != "agent")
        .map(|n| {
            let blockers: Vec<String> =
                n["blocked_by"].as_array().unwrap().iter().filter_map(|b| name_of(b.as_str()?)).collect();
            let parent = n["parent"].as_str().and_then(name_of).unwrap_or_default();
            format!(
                "{parent}/{} {} {} p{} {:?} doc={} set={}",
                n["name"], n["kind"], n["status"], n["priority"], blockers, n["document"]["text"], n["set"]["adds"]
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn export_then_import_reproduces_the_state_and_snapshot_compacts_the_journal() {
    let a = Daemon::start("persist-src");
    let b = Daemon::start("persist-dst");
    a.run(&["add", "project", "web"]).ok();
    a.run(&["add", "task", "schema", "--parent", "/web", "--priority", "9"]).ok();
    a.run(&["add", "task", "backend", "--parent", "/web", "--blocked-by", "/web/schema"]).ok();
    a.run(&["add", "task", "frontend", "--parent", "/web", "--blocked-by", "/web/schema"]).ok();
    a.run(&[
        "add",
        "task",
        "tests",
        "--parent",
        "/web",
        "--blocked-by",
        "/web/backend",
        "--blocked-by",
        "/web/frontend",
    ])
    .ok();
    a.run(&["add", "task", "dropped", "--parent", "/web"]).ok();
    a.run_stdin(&["doc", "put", "/web", "schema.sql", "-"], b"create table users (id int);").ok();
    a.run_as("arch", &["claim", "/web/schema"]).ok();
    a.run_as("arch", &["done", "/web/schema"]).ok();
    a.run_as("arch", &["claim", "/web/backend"]).ok();
    a.run_as("arch", &["fail", "/web/backend", "--reason", "flaky"]).ok();
    let export = a.json(&["export"]);
    assert_eq!(export["format"], "worknode-export");

    let dir = std::env::temp_dir().join(format!("wn-persist-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("export.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let imported = b.json(&["import", file.to_str().unwrap()]);
    assert_eq!(imported["imported"], 7, "{imported}");
    let again = b.json(&["export"]);
    assert_eq!(shape(&export), shape(&again));
    // The dependents of the completed schema are ready, the one behind the failed
    // backend is still blocked: the dependency graph was rebuilt, not just copied.
    let statuses: Vec<(String, String)> = again["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
        .collect();
    assert!(statuses.contains(&("frontend".into(), "ready".into())), "{statuses:?}");
    assert!(statuses.contains(&("tests".into(), "blocked".into())), "{statuses:?}");
    assert!(statuses.contains(&("backend".into(), "failed".into())), "{statuses:?}");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"format":"something-else"}"#).unwrap();
    b.fails(&["import", bad.to_str().unwrap()], 2, "bad_export");

    let snap = a.json(&["snapshot"]);
    assert!(snap["snapshot"].as_u64().unwrap() >= 1, "{snap}");
    let _ = std::fs::remove_dir_all(&dir);
}
