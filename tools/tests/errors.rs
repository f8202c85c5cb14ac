//! Errors that do not need a populated segment: no segment, a bad segment name, a file
//! that is not a segment, usage errors (human and JSON, by flag and by environment).

mod common;

use common::{run, wn_command, Daemon};

fn unique(tag: &str) -> String {
    format!("wn-t-{}-{tag}", std::process::id())
}

#[test]
fn a_missing_segment_is_not_found_with_a_hint() {
    let name = unique("missing");
    let out = run(wn_command(&name).arg("ls"), None);
    out.fails(4);
    assert!(out.stderr.starts_with("wn: no Worknode segment named") && out.stderr.contains("hint: "), "{out:?}");
    let out = run(wn_command(&name).args(["--json", "dump"]), None);
    out.fails(4);
    assert!(out.stdout.is_empty());
    let e = out.err_json();
    assert_eq!(e["code"], "segment_not_found");
    assert!(e["hint"].as_str().unwrap().contains("worknoded --segment"), "{e}");
    // The flag beats the environment.
    let out = run(wn_command("elsewhere").args(["--segment", &name, "--json", "ls"]), None);
    assert_eq!(out.err_json()["error"].as_str().map(|e| e.contains(&name)), Some(true), "{out:?}");
}

#[test]
fn bad_names_and_foreign_files_are_refused() {
    let out = run(wn_command("bad/name").args(["--json", "ls"]), None);
    out.fails(2);
    assert_eq!(out.err_json()["code"], "invalid_segment_name");
    let name = unique("foreign");
    let path = worknode::shm_path(&name);
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let out = run(wn_command(&name).args(["--json", "ls"]), None);
    let _ = std::fs::remove_file(&path);
    out.fails(1);
    assert_eq!(out.err_json()["code"], "not_a_worknode_segment");
}

#[test]
fn usage_errors_exit_2_in_json_too() {
    let d = Daemon::start("errors-usage");
    let out = d.run(&["frobnicate"]);
    out.fails(2);
    assert!(out.stderr.contains("unrecognized subcommand"), "{out:?}");
    let e = d.fails(&["frobnicate"], 2, "usage");
    assert!(e["error"].as_str().unwrap().contains("frobnicate"), "{e}");
    let e = d.fails(&["show"], 2, "usage");
    assert!(e["error"].as_str().unwrap().contains("<NODE>"), "{e}");
    d.fails(&["claim", "--next", "--lease", "forever"], 2, "usage");
    d.fails(&["ls", "--status", "sleeping"], 2, "usage");
    // WORKNODE_JSON=1 asks for JSON like --json does, for data and for errors.
    let out = run(d.cmd().env("WORKNODE_JSON", "1").arg("ls"), None);
    assert_eq!(out.ok().json()["count"], 2);
    let out = run(d.cmd().env("WORKNODE_JSON", "1").arg("frobnicate"), None);
    out.fails(2);
    assert_eq!(out.err_json()["code"], "usage");
    // WORKNODE_AGENT names the agent.
    let out = run(d.cmd().env("WORKNODE_AGENT", "envy").args(["--json", "join"]), None);
    assert_eq!(out.ok().json()["name"], "envy");
    // Help and version are not errors.
    d.run(&["help", "claim"]).ok();
    let v = d.run(&["--version"]);
    assert!(v.ok().stdout.starts_with("wn "), "{v:?}");
}
