//! The console examples of README.md and tools/README.md are real output: each file's
//! `console` blocks run, in order, against a daemon of their own, through trycmd (`[..]`
//! matches what differs from run to run, `...` whole lines, `? N` is the exit code). A
//! block that cannot run here (the daemon's own start, another user's agent) is `text`.

mod common;

use common::Daemon;
use worknode::Capacities;

fn run_examples(test: &str, file: &str) {
    // As the READMEs say: `worknoded --nodes 1024 --events 4096`, the rest default.
    let caps = Capacities { nodes: 1024, events: 4096, ..Capacities::default() };
    let d = Daemon::start_with(test, caps);
    trycmd::TestCases::new()
        .register_bin("wn", common::wn_bin())
        .env("WORKNODE_SEGMENT", d.name())
        .env("WORKNODE_DATA_DIR", d.data_dir().display().to_string())
        .env("NO_COLOR", "1")
        .case(file)
        .run();
}

#[test]
fn the_readme_tour_is_real_output() {
    run_examples("readme-root", "../README.md");
}

#[test]
fn the_wn_readme_tour_is_real_output() {
    run_examples("readme-tools", "README.md");
}
