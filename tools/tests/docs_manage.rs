//! Managing documents through the real binary: `doc ls`, `doc rm`, a replace that only
//! fits by reusing the old chunks, and the arena's usage in `stat` and `top`.

mod common;

use common::Daemon;
use worknode::Capacities;

#[test]
fn doc_ls_lists_the_documents_under_a_node_and_doc_rm_deletes_one() {
    let d = Daemon::start("docs-ls-rm");
    d.run(&["add", "folder", "f"]).ok();
    d.run(&["add", "folder", "empty"]).ok();
    d.run(&["add", "task", "t", "--parent", "/f"]).ok();
    d.run_stdin(&["doc", "put", "/f", "a.json", "-", "--type", "application/json"], br#"{"a":1}"#).ok();
    d.run_stdin(&["doc", "put", "/f", "b.txt", "-"], b"hello\n").ok();
    d.run_stdin(&["doc", "put", "/f", "b.txt", "-"], b"hello again\n").ok(); // version 3
    let big = vec![0xffu8; 5000];
    d.run_stdin(&["doc", "put", "/f", "c.bin", "-"], &big).ok();

    let j = d.json(&["doc", "ls", "/f"]);
    assert_eq!(j["count"], 3, "the task is not listed: {j}");
    let docs = j["documents"].as_array().unwrap();
    let names: Vec<&str> = docs.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.json", "b.txt", "c.bin"]);
    assert_eq!((docs[0]["bytes"].as_u64(), docs[0]["content_type"].as_str()), (Some(7), Some("application/json")));
    assert_eq!((docs[1]["bytes"].as_u64(), docs[1]["version"].as_u64()), (Some(12), Some(3)));
    assert_eq!(
        (docs[2]["bytes"].as_u64(), docs[2]["content_type"].as_str()),
        (Some(5000), Some("application/octet-stream"))
    );
    let uuid_b = docs[1]["uuid"].as_str().unwrap().to_string();
    assert_eq!(d.json(&["show", &uuid_b])["name"], "b.txt");

    let human = d.run(&["doc", "ls", "/f"]);
    let text = &human.ok().stdout;
    assert!(text.lines().next().unwrap().contains("NAME") && text.contains("TYPE"), "{text}");
    assert!(text.contains("c.bin") && text.contains("5000") && text.contains(&uuid_b), "{text}");
    assert!(d.run(&["doc", "ls", "/empty"]).ok().stdout.contains("no documents under /empty"));
    assert_eq!(d.json(&["doc", "ls", "/empty"])["count"], 0);
    assert_eq!(d.json(&["doc", "ls"])["count"], 0, "the root holds none");

    let used = |d: &Daemon| d.run(&["--json", "stat", "--count", "1"]).ok().json_lines()[0]["blob_chunks_used"].clone();
    let before = used(&d).as_u64().unwrap();
    let rm = d.json(&["doc", "rm", "/f/c.bin"]);
    assert_eq!((rm["path"].as_str(), rm["bytes"].as_u64()), (Some("/f/c.bin"), Some(5000)));
    assert_eq!(before - used(&d).as_u64().unwrap(), 5000u64.div_ceil(Capacities::default().blob_chunk_size as u64));
    let out = d.run(&["doc", "rm", &uuid_b]);
    assert!(out.ok().stdout.starts_with(&format!("deleted document {uuid_b} /f/b.txt")), "{out:?}");
    assert_eq!(d.json(&["doc", "ls", "/f"])["count"], 1);
    d.fails(&["doc", "get", "/f/b.txt"], 4, "node_not_found");

    // Errors: not a document (2), no such node (4), a document deleted meanwhile (4).
    let e = d.fails(&["doc", "rm", "/f/t"], 2, "not_a_document");
    assert!(e["hint"].as_str().unwrap().contains("wn doc ls"), "{e}");
    d.fails(&["doc", "rm", "/f/nope"], 4, "node_not_found");
    d.fails(&["doc", "ls", "/nope"], 4, "node_not_found");
    d.fails(&["doc", "rm", &uuid_b], 4, "node_not_found");
    d.fails(&["doc", "rm"], 2, "usage");
    assert_eq!(d.json(&["show", "/f/t"])["name"], "t", "the task is still there");
}

#[test]
fn a_replace_in_a_full_arena_reuses_the_old_chunks() {
    let caps = Capacities { nodes: 64, events: 1024, agents: 4, blob_chunks: 4, ..Capacities::default() };
    let chunk = caps.blob_chunk_size as usize;
    let d = Daemon::start_with("docs-replace-full", caps);
    d.run(&["add", "folder", "f"]).ok();
    d.run_stdin(&["doc", "put", "/f", "a", "-"], &vec![b'a'; 3 * chunk]).ok();
    d.run_stdin(&["doc", "put", "/f", "b", "-"], &vec![b'b'; chunk]).ok();
    let stat = d.run(&["--json", "stat", "--count", "1"]).ok().json_lines()[0].clone();
    assert_eq!((stat["blob_chunks_used"].as_u64(), stat["blob_chunks"].as_u64()), (Some(4), Some(4)), "{stat}");
    assert_eq!(stat["blob_arena_percent"], 100);

    // The arena is full, yet 3 new chunks fit in the 3 old ones.
    let new = vec![b'n'; 3 * chunk - 10];
    d.run_stdin(&["doc", "put", "/f", "a", "-"], &new).ok();
    assert_eq!(d.run(&["doc", "get", "/f/a"]).ok().stdout_bytes, new);
    assert_eq!(d.json(&["doc", "get", "/f/a"])["version"], 3);
    // 4 do not (3 old + 0 free): refused, the old content intact.
    let out = d.run_stdin(&["--json", "doc", "put", "/f", "a", "-"], &vec![b'x'; 4 * chunk]);
    out.fails(7);
    assert_eq!(out.err_json()["code"], "blob_arena_full");
    assert_eq!(d.run(&["doc", "get", "/f/a"]).ok().stdout_bytes, new);
    assert_eq!(d.json(&["doc", "get", "/f/a"])["version"], 3);
    // Once `b` is gone they do (3 old + 1 free).
    d.run(&["doc", "rm", "/f/b"]).ok();
    let whole = vec![b'w'; 4 * chunk];
    d.run_stdin(&["doc", "put", "/f", "a", "-"], &whole).ok();
    assert_eq!(d.run(&["doc", "get", "/f/a"]).ok().stdout_bytes, whole);
    // Shrinking gives the surplus back.
    d.run_stdin(&["doc", "put", "/f", "a", "-"], b"small").ok();

    // Arena usage, human and JSON, in `stat` and `top`.
    let out = d.run(&["stat", "--count", "1"]);
    let lines: Vec<&str> = out.ok().stdout.lines().collect();
    assert!(lines[0].contains("blobs"), "{out:?}");
    assert!(lines[1].split_whitespace().any(|w| w == "1/4"), "{out:?}");
    let top = d.json(&["top", "--once"]);
    assert_eq!((top["blob_chunks_used"].as_u64(), top["blob_arena_percent"].as_u64()), (Some(1), Some(25)), "{top}");
    let frame = d.run(&["top", "--once", "--width", "160", "--height", "30"]);
    assert!(frame.ok().stdout.contains("blob arena 1/4 chunks (25%)"), "{}", frame.stdout);
}
