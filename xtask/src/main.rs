//! `cargo xtask`: project tasks that need more than cargo (the `cargo xtask` convention;
//! the alias is in `.cargo/config.toml`).
//!
//! * `cargo xtask test` — the README's test command: `cargo test --workspace`, then the
//!   Python SDK's tests: a virtualenv under `target/py-venv` (made once, reused) with
//!   pinned maturin, pytest and redis-py from PyPI, `pip install ./python` into it (a
//!   dev-profile build), and pytest on `python/tests` against the workspace's debug
//!   `worknoded`.
//!   `--python-only` skips the Rust tests, `--rust-only` the Python ones. Before the
//!   Rust tests, the OS packages they need (headless Chromium) are installed with
//!   `apt-get` when missing and running as root; otherwise the task says what to run.
//!
//! Every step runs with a deadline; a step that passes it is killed and the task fails
//! naming the step.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The Python packages the tests need, pinned (the build backend, the runner, and the
/// Redis client the benchmark compares with).
const PY_PINS: [&str; 3] = ["maturin==1.16.0", "pytest==9.2.0", "redis==8.1.0"];

/// Deadlines of the steps.
const CARGO_TEST: Duration = Duration::from_secs(3600);
const CARGO_BUILD: Duration = Duration::from_secs(1800);
const MAKE_VENV: Duration = Duration::from_secs(300);
const PIP_PINS: Duration = Duration::from_secs(900);
const PIP_SDK: Duration = Duration::from_secs(2400);
const PYTEST: Duration = Duration::from_secs(1800);
const PROBE: Duration = Duration::from_secs(60);
const APT: Duration = Duration::from_secs(1200);

/// Why a task failed: printed as one line.
struct Failed(String);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask test [--rust-only | --python-only]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(why)) => {
            eprintln!("xtask: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The target directory cargo uses (`CARGO_TARGET_DIR`, else `target/` in the root).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` to completion within `limit`; fails naming `step` if it fails, cannot
/// start or overruns (then it is killed).
fn run(step: &str, cmd: &mut Command, limit: Duration) -> Result<(), Failed> {
    eprintln!("xtask: == {step}");
    let mut child = cmd.spawn().map_err(|e| Failed(format!("{step}: cannot start {:?}: {e}", cmd.get_program())))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(Failed(format!("{step} failed ({status})"))),
            Ok(None) if Instant::now() >= deadline => {
                kill_tree(&mut child);
                return Err(Failed(format!("{step} did not finish within {}s: killed it", limit.as_secs())));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(Failed(format!("{step}: cannot wait for it: {e}"))),
        }
    }
}

/// Kills `child` and everything it started (a test binary's daemons, pytest's workers),
/// so an overrun step leaves nothing running. The child stays in our process group (a
/// Ctrl-C still reaches it); its descendants are found through `/proc`.
fn kill_tree(child: &mut std::process::Child) {
    let mut pids = descendants(child.id());
    pids.push(child.id());
    let mut kill = Command::new("kill");
    kill.arg("-KILL").args(pids.iter().map(u32::to_string));
    let _ = kill.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The pids of every process descended from `root`, read from `/proc/*/stat` (the
/// parent pid is the fourth field, after the command name in parentheses).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    // Each pid is added once, so this ends after at most as many rounds as processes.
    while i < found.len() {
        let p = found[i];
        for &(pid, ppid) in &parent_of {
            if ppid == p && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// Whether `cmd` runs and succeeds within `limit` (output discarded).
fn probe(cmd: &mut Command, limit: Duration) -> bool {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let Ok(mut child) = cmd.spawn() else { return false };
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() >= deadline => {
                kill_tree(&mut child);
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => return false,
        }
    }
}

fn test(args: &[String]) -> Result<(), Failed> {
    let rust = !args.iter().any(|a| a == "--python-only");
    let python = !args.iter().any(|a| a == "--rust-only");
    if let Some(bad) = args.iter().find(|a| !matches!(a.as_str(), "--python-only" | "--rust-only")) {
        return Err(Failed(format!("unknown option {bad:?}: use --rust-only or --python-only")));
    }
    let root = root();
    if rust {
        os_packages()?;
        run("cargo test --workspace", cargo().arg("test").arg("--workspace").current_dir(&root), CARGO_TEST)?;
    }
    if python {
        python_tests(&root)?;
    }
    Ok(())
}

/// The programs the Rust tests start that a fresh machine lacks, and the Debian/Ubuntu
/// package of each: headless Chromium loads `wn serve`'s dashboard
/// (`tools/tests/serve.rs`); `nats-server -js` carries the boards two bridges share
/// (`bridge/tests/hosts.rs`).
const OS_PACKAGES: [(&str, &str); 2] = [("/usr/bin/chromium", "chromium"), ("/usr/sbin/nats-server", "nats-server")];

/// Installs the missing [`OS_PACKAGES`] with `apt-get` when running as root (CI, a fresh
/// container); otherwise fails with the command to run.
fn os_packages() -> Result<(), Failed> {
    let missing: Vec<&str> =
        OS_PACKAGES.iter().filter(|(path, _)| !Path::new(path).exists()).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root_user = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root_user || !probe(Command::new("apt-get").arg("--version"), PROBE) {
        return Err(Failed(format!(
            "the tests need {} (not installed): run `sudo apt-get install {}` and retry",
            missing.join(", "),
            missing.join(" ")
        )));
    }
    // No terminal for apt or dpkg: a prompt would wait out the step's deadline.
    run("apt-get update", Command::new("apt-get").args(["update", "-qq"]).stdin(std::process::Stdio::null()), APT)?;
    run(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"])
            .args(["-o", "DPkg::Lock::Timeout=120"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null()),
        APT,
    )
}

fn python_tests(root: &Path) -> Result<(), Failed> {
    let target = target_dir(root);
    // The daemon and CLI the tests start (debug builds, as `cargo test` made them).
    run(
        "cargo build -p worknoded -p wn",
        cargo().args(["build", "-p", "worknoded", "-p", "wn"]).current_dir(root),
        CARGO_BUILD,
    )?;
    let venv = target.join("py-venv");
    let py = venv.join("bin").join("python");
    if !py.exists() {
        if !probe(Command::new("python3").arg("--version"), PROBE) {
            return Err(Failed(
                "python3 is not installed: install it (Debian/Ubuntu: apt-get install python3 python3-venv)".into(),
            ));
        }
        if !probe(Command::new("python3").args(["-c", "import venv, ensurepip"]), PROBE) {
            return Err(Failed(
                "python3 cannot make virtualenvs (no venv/ensurepip): apt-get install python3-venv".into(),
            ));
        }
        let made =
            run("python3 -m venv target/py-venv", Command::new("python3").args(["-m", "venv"]).arg(&venv), MAKE_VENV);
        if made.is_err() || !py.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(Failed(format!(
                "cannot create the virtualenv {}: install python3-venv (apt-get install python3-venv) and retry",
                venv.display()
            )));
        }
    }
    // The venv's tools first on PATH: the build backend runs the venv's `maturin`.
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![venv.join("bin")];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).map_err(|e| Failed(format!("cannot build PATH: {e}")))?
        }
        None => venv.join("bin").into_os_string(),
    };
    let pip = |step: &str, extra: &[&str], limit: Duration| {
        let mut cmd = Command::new(&py);
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
            .args(extra)
            .current_dir(root)
            .env("PATH", &path);
        run(step, &mut cmd, limit)
    };
    pip("pip install the pinned tools (maturin, pytest, redis)", &PY_PINS, PIP_PINS)?;
    // The SDK as a user installs it (`pip install ./python`), built by the venv's
    // maturin without a second download of it, in the dev profile: it reuses what
    // `cargo test` just built instead of building every dependency again in release.
    pip(
        "pip install ./python",
        &[
            "--no-build-isolation",
            "--force-reinstall",
            "--no-deps",
            "--config-settings=build-args=--profile dev",
            "./python",
        ],
        PIP_SDK,
    )?;
    let bin = target.join("debug");
    let mut cmd = Command::new(&py);
    cmd.args(["-m", "pytest", "-q", "python/tests"])
        .current_dir(root)
        .env("PATH", &path)
        .env("WORKNODE_DAEMON_BIN", bin.join("worknoded"))
        .env("WORKNODE_WN_BIN", bin.join("wn"))
        .env_remove("WORKNODE_SEGMENT")
        .env_remove("WORKNODE_AGENT")
        .env_remove("WORKNODE_TOKEN");
    run("pytest python/tests", &mut cmd, PYTEST)
}
