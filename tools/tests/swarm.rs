//! A scripted swarm that uses nothing but `wn`: a coordinator and five agents, each a
//! bash script, build the web-app example (schema → backend and frontend → tests and
//! docs). The coordinator creates the project and the tasks with their dependencies and
//! follows the event stream until every task is complete; each agent loops `claim --next`
//! / `wait --kind task_ready` / `doc put` / `done` until the project is done. The test
//! then checks the final state, the documents, and that no task was claimed before its
//! blockers completed.
//!
//! Every wait is bounded (`wn wait --timeout`, `wn events --follow --timeout`, bounded
//! loops, and deadlines on the processes). Each script runs in its own process group,
//! which the test kills when it ends, so no `wn` a script started can outlive the test.

mod common;

use common::{wn_bin, Daemon};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;
use worknode_tests::Proc;

/// The coordinator: lays out the project, then follows completions.
const COORDINATOR: &str = r#"
set -u
wn() { "$WN" "$@"; }
wn add project "web app" >/dev/null || exit 20
schema=$(wn add task schema --parent "/web app" --priority 9 --desc "data model" | cut -d' ' -f1) || exit 21
backend=$(wn add task backend --parent "/web app" --priority 5 --blocked-by "$schema" | cut -d' ' -f1) || exit 22
frontend=$(wn add task frontend --parent "/web app" --priority 5 --blocked-by "$schema" | cut -d' ' -f1) || exit 23
wn add task tests --parent "/web app" --blocked-by "$backend" --blocked-by "$frontend" >/dev/null || exit 24
wn add task docs --parent "/web app" --blocked-by "/web app/backend" --blocked-by "/web app/frontend" >/dev/null || exit 25
echo "coordinator: 5 tasks created"
# Follow the stream from its start (nothing is missed, whenever this begins) until five
# tasks have completed; bounded by --timeout.
n=0
while IFS= read -r line; do
  case "$line" in
    *'"kind":"task_completed"'*) n=$((n + 1)); echo "coordinator: completed $n" ;;
  esac
done < <(wn --json events --follow --since 0 --kind task_completed --limit 5 --timeout 120s)
[ "$n" -eq 5 ] || { echo "coordinator: only $n completions"; exit 26; }
wn rollup "/web app" | grep -q '5 tasks, 100% complete' || exit 27
echo "coordinator: all complete"
"#;

/// An agent: claims whatever is ready, writes its artifact, completes it; waits for
/// `task_ready` when nothing is; leaves when the project is complete.
const AGENT: &str = r#"
set -u
wn() { "$WN" "$@"; }
err=$(mktemp)
trap 'rm -f "$err"' EXIT
for round in $(seq 1 300); do
  out=$(wn claim --next --under "/web app" --lease 2m 2>"$err")
  rc=$?
  if [ $rc -eq 0 ]; then
    id=${out%% *}
    name=${out##* }
    wn start "$id" >/dev/null || exit 10
    wn progress "$id" 50 >/dev/null || exit 11
    printf 'artifact of %s by %s\n' "$name" "$WORKNODE_AGENT" | wn doc put "$id" "$name.md" - >/dev/null || exit 12
    wn done "$id" --note "by $WORKNODE_AGENT" >/dev/null || exit 13
    echo "$WORKNODE_AGENT: did $name"
  elif [ $rc -eq 4 ]; then
    if wn rollup "/web app" 2>/dev/null | grep -q '5 tasks, 100% complete'; then
      echo "$WORKNODE_AGENT: project complete"
      exit 0
    fi
    wn wait --kind task_ready --timeout 1s >/dev/null 2>&1
    rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 5 ] || [ $rc -eq 4 ] || { echo "wait failed: $rc"; exit 14; }
  else
    echo "$WORKNODE_AGENT: claim failed with $rc: $(cat "$err")"
    exit 15
  fi
done
echo "$WORKNODE_AGENT: gave up"
exit 16
"#;

/// Kills each script's whole process group when dropped.
struct Groups(Vec<i32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for pgid in &self.0 {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
    }
}

fn script(d: &Daemon, body: &str, agent: Option<&str>, label: &str, groups: &mut Groups) -> Proc {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(body).env("WN", wn_bin()).env("WORKNODE_SEGMENT", d.name());
    for v in ["WORKNODE_AGENT", "WORKNODE_JSON", "NO_COLOR", "CLICOLOR_FORCE"] {
        cmd.env_remove(v);
    }
    if let Some(a) = agent {
        cmd.env("WORKNODE_AGENT", a);
    }
    cmd.process_group(0);
    let p = d.guard.spawn(cmd, label);
    groups.0.push(p.pid() as i32);
    p
}

#[test]
fn five_agents_and_a_coordinator_build_the_web_app_with_only_wn() {
    let d = Daemon::start("swarm-webapp");
    let mut groups = Groups(Vec::new());
    let mut coordinator = script(&d, COORDINATOR, None, "coordinator", &mut groups);
    let names = ["architect", "backend-dev", "frontend-dev", "tester", "writer"];
    let mut agents: Vec<Proc> = names.iter().map(|n| script(&d, AGENT, Some(n), n, &mut groups)).collect();

    let status = coordinator.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "coordinator failed: {status}\n{}", coordinator.transcript());
    for a in agents.iter_mut() {
        let status = a.wait_exit(Duration::from_secs(120));
        assert!(status.success(), "{} failed: {status}\n{}", a.label(), a.transcript());
    }

    // Final state, through wn.
    let roll = d.json(&["rollup", "/web app"]);
    assert_eq!(roll["total"], 5);
    assert_eq!(roll["by_status"]["complete"], 5);
    assert_eq!(roll["percent_complete"], 100.0);
    let tasks = d.json(&["ls", "--under", "/web app", "--kind", "task"]);
    assert_eq!(tasks["count"], 5);
    let mut by_uuid: HashMap<String, Value> = HashMap::new();
    for t in tasks["nodes"].as_array().unwrap() {
        assert_eq!(t["status"], "complete", "{t}");
        assert_eq!(t["progress"], 100);
        by_uuid.insert(t["uuid"].as_str().unwrap().to_string(), t.clone());
    }
    // Each task carries its artifact, written by the agent that completed it.
    let events = d.run(&["--json", "events", "--since", "0"]).ok().json_lines();
    for t in by_uuid.values() {
        let name = t["name"].as_str().unwrap();
        let doc = d.run(&["doc", "get", &format!("/web app/{name}/{name}.md")]);
        let text = doc.ok().stdout.clone();
        let done = events
            .iter()
            .find(|e| e["kind"] == "task_completed" && e["node"] == t["uuid"])
            .unwrap_or_else(|| panic!("no task_completed for {name}"));
        let by = done["actor"]["name"].as_str().unwrap();
        assert_eq!(text, format!("artifact of {name} by {by}\n"));
        assert_eq!(done["payload"]["note"], format!("by {by}"));
    }
    // Dependencies held: no task was claimed before all its blockers had completed.
    let seq_of = |kind: &str, uuid: &str| -> Vec<u64> {
        events.iter().filter(|e| e["kind"] == kind && e["node"] == uuid).map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    for t in by_uuid.values() {
        let uuid = t["uuid"].as_str().unwrap();
        let first_claim = *seq_of("task_claimed", uuid).iter().min().expect("claimed");
        for b in t["blocked_by"].as_array().unwrap() {
            let done = seq_of("task_completed", b["uuid"].as_str().unwrap());
            assert!(
                done.iter().all(|s| *s < first_claim),
                "{} claimed at {first_claim} before blocker done at {done:?}",
                t["name"]
            );
        }
    }
    // The agents are all known, and hold nothing any more.
    let agents_json = d.json(&["agents"]);
    assert_eq!(agents_json["count"], 5);
    assert!(agents_json["agents"].as_array().unwrap().iter().all(|a| a["claims"] == Value::Array(vec![])));
    let report = d.json(&["doctor"]);
    assert_eq!(report["healthy"], true, "{report}");
    drop(groups);
}
