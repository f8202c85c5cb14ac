//! `wn-bench`: the side-by-side latency harness (issue 7) and the durability benchmark
//! (issue 6). Everything lives in the library's modules; see `worknode_benches::suite`.
//!
//! ```sh
//! cargo run --release -p worknode-benches --bin wn-bench -- --quick --json out.json --plot out.svg
//! ```

fn main() -> std::process::ExitCode {
    worknode_benches::suite::main()
}
