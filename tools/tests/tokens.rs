//! Capability tokens with real `worknoded` and `wn` processes of the daemon's user (the
//! direct path: the daemon verifies the token, the library checks every change): mint,
//! use, refuse (rights, subtree, forged, expired, revoked, another agent), list, revoke.
//! The other-user path through the broker is tested in `tests/tests/broker.rs`.

mod common;

use common::{run, Daemon};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

fn mint(d: &Daemon, args: &[&str]) -> String {
    let out = d.run(&[&["token", "mint"], args].concat());
    out.ok();
    let t = out.stdout.trim().to_string();
    assert!(t.starts_with("wnt1."), "{out:?}");
    t
}

fn with_token(d: &Daemon, token: &str, args: &[&str]) -> common::Out {
    run(d.cmd().args(["--json", "--token", token]).args(args), None)
}

/// The verb fails with exit 6, error code `code`, a message containing `what`, and a hint.
fn refused(d: &Daemon, token: &str, args: &[&str], code: &str, what: &str) {
    let out = with_token(d, token, args);
    out.fails(6);
    let e = out.err_json();
    assert_eq!(e["code"], code, "{out:?}");
    assert!(e["error"].as_str().unwrap().contains(what), "{out:?}");
    assert!(e["hint"].as_str().is_some_and(|h| !h.is_empty()), "{out:?}");
}

#[test]
fn tokens_are_minted_used_refused_listed_and_revoked() {
    let d = Daemon::start("tokens");
    let key = d.data_dir().join("token.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);

    // A whole-tree token for read and create acts as its agent.
    let rw = mint(&d, &["--agent", "w1", "--rights", "read,create", "--ttl", "1h"]);
    let out = with_token(&d, &rw, &["add", "project", "A"]);
    out.ok();
    with_token(&d, &rw, &["add", "project", "B"]).ok();
    with_token(&d, &rw, &["ls"]).ok();
    // Through the environment too.
    run(d.cmd().env("WORKNODE_TOKEN", &rw).args(["add", "task", "env", "--parent", "/A"]), None).ok();
    // It cannot claim, and another --agent is refused.
    refused(&d, &rw, &["claim", "--next"], "token_lacks_right", "does not grant claim");
    refused(&d, &rw, &["--agent", "someone-else", "ls"], "token_agent_mismatch", "not \"someone-else\"");
    run(d.cmd().args(["--token", &rw, "--agent", "w1", "ls"]), None).ok();

    // A read-only token cannot add.
    let ro = mint(&d, &["--agent", "reader", "--rights", "read"]);
    with_token(&d, &ro, &["ls"]).ok();
    refused(&d, &ro, &["add", "task", "x"], "token_lacks_right", "does not grant create");

    // A token under /A creates under /A, not under /B nor at the root.
    let sub = mint(&d, &["--agent", "w2", "--rights", "read,create", "--under", "/A"]);
    with_token(&d, &sub, &["add", "task", "inside", "--parent", "/A"]).ok();
    with_token(&d, &sub, &["add", "task", "deeper", "--parent", "/A/inside"]).ok();
    refused(&d, &sub, &["add", "task", "outside", "--parent", "/B"], "outside_subtree", "only inside its subtree");
    refused(&d, &sub, &["add", "task", "at-root"], "outside_subtree", "only inside its subtree");
    // Claimant verbs check the task's place too: a claim-and-update token under /A
    // works on /A/inside, and not on a task under /B.
    with_token(&d, &rw, &["add", "task", "b-task", "--parent", "/B"]).ok();
    let worker = mint(&d, &["--agent", "w4", "--rights", "read,claim,update", "--under", "/A"]);
    with_token(&d, &worker, &["claim", "/A/inside"]).ok();
    with_token(&d, &worker, &["progress", "/A/inside", "50"]).ok();
    with_token(&d, &worker, &["done", "/A/inside"]).ok();
    refused(&d, &worker, &["claim", "/B/b-task"], "outside_subtree", "grants claim only inside");
    let out = with_token(&d, &worker, &["progress", "/B/b-task", "10"]);
    out.fails(3);
    assert!(out.err_json()["error"].as_str().unwrap().ends_with("is not claimed by w4"), "{out:?}");
    // With an epoch presented, wn goes straight to the library, which checks the subtree.
    refused(
        &d,
        &worker,
        &["progress", "/B/b-task", "10", "--epoch", "1"],
        "outside_subtree",
        "grants update only inside",
    );
    // A subtree token's `claim --next` looks only inside its subtree.
    with_token(&d, &rw, &["add", "task", "b-ready", "--parent", "/B", "--status", "ready"]).ok();
    for round in 0.. {
        let out = with_token(&d, &worker, &["claim", "--next"]);
        if out.code == 4 {
            break;
        }
        out.ok();
        let claimed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert!(claimed["path"].as_str().unwrap().starts_with("/A/"), "{claimed}");
        assert!(round < 10, "claim --next kept finding tasks");
    }
    assert_eq!(d.json(&["show", "/B/b-ready"])["status"], "ready");
    // A token without read cannot attach at all.
    let blind = mint(&d, &["--agent", "w5", "--rights", "create"]);
    refused(&d, &blind, &["ls"], "token_lacks_right", "does not grant read");

    // Forged: one byte changed, anywhere, is refused.
    for at in [5, rw.len() / 2, rw.len() - 1] {
        let mut b = rw.clone().into_bytes();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(b).unwrap();
        refused(&d, &forged, &["ls"], "token_invalid", "token");
    }
    refused(&d, "wnt1.nonsense", &["ls"], "token_invalid", "not a well-formed token");

    // Expired.
    let short = mint(&d, &["--agent", "w3", "--rights", "read", "--ttl", "1ms"]);
    std::thread::sleep(Duration::from_millis(20));
    refused(&d, &short, &["ls"], "token_expired", "expired");

    // Revoked.
    let ls = d.json(&["token", "ls"]);
    let tokens = ls["tokens"].as_array().unwrap();
    assert_eq!(ls["count"], 6, "{ls}");
    let id = tokens.iter().find(|t| t["agent"] == "reader").unwrap()["id"].as_str().unwrap().to_string();
    d.run(&["token", "revoke", &id]).ok();
    refused(&d, &ro, &["ls"], "token_revoked", "revoked");
    let ls = d.json(&["token", "ls"]);
    let by = |agent: &str| ls["tokens"].as_array().unwrap().iter().find(|t| t["agent"] == agent).unwrap().clone();
    assert_eq!(by("reader")["revoked"], true, "{ls}");
    assert_eq!(by("w1")["revoked"], false, "{ls}");
    assert_eq!(by("w3")["expired"], true, "{ls}");
    assert!(by("w2")["subtree"].is_string(), "{ls}");
    let table = d.run(&["token", "ls"]);
    table.ok();
    assert!(table.stdout.contains("revoked") && table.stdout.contains(&id), "{table:?}");
    d.fails(&["token", "revoke", "not-an-id"], 2, "usage");
    // Admin verbs check the admin right.
    refused(&d, &rw, &["snapshot"], "token_lacks_right", "does not grant admin");
    for f in ["token.key", "tokens.issued", "tokens.revoked"] {
        assert_eq!(std::fs::metadata(d.data_dir().join(f)).unwrap().mode() & 0o777, 0o600, "{f}");
    }
}

#[test]
fn a_key_file_wider_than_0600_is_refused() {
    let d = Daemon::start("tokens-mode");
    let key = d.data_dir().join("token.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = d.fails(&["token", "mint", "--agent", "w", "--rights", "read"], 6, "token_store");
    assert!(e["error"].as_str().unwrap().contains("mode 644"), "{e}");
    // Without a token, nothing changes.
    d.run(&["ls"]).ok();
}
