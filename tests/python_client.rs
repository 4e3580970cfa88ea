//! The Python client's suite (issue 15): `clients/python/tests`, pytest
//! against a real local 3-node cluster of this build's `raftlog serve`,
//! through the `raftlog` package built from `clients/python` (PyO3 +
//! maturin, on the crate's Rust client).
//!
//! This test makes a venv under the target dir (`python3 -m venv`, then
//! `pip install -r clients/python/tests/requirements.txt`: maturin and
//! pytest, pinned; reused while that file is unchanged), builds and
//! installs the package into it (`pip install ./clients/python`; cargo's
//! incremental build under `target/tmp/python-client-target` makes a rerun
//! cheap) and runs pytest with `RAFTLOG_BIN` set to the binary cargo built.
//! It runs in every `cargo test`. Where the venv cannot be made (no
//! python3, or PyPI not reachable) it is skipped with a message saying so,
//! except with `CI` set or `RAFTLOG_PYTHON_CLIENT=1`, where that fails the
//! test; a package that does not build always fails it. By hand, after
//! `pip install ./clients/python pytest`:
//! `RAFTLOG_BIN=target/release/raftlog python -m pytest clients/python/tests`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::{run_command, RAFTLOG};
use common::venv::{check, command, required, venv};

const REQUIREMENTS: &str = include_str!("../clients/python/tests/requirements.txt");
/// The cargo profile the test builds the extension with (defined in
/// clients/python/Cargo.toml): quick to compile, fast enough for the suite.
/// `pip install ./clients/python` without it builds `release`.
const PROFILE: &str = "quick";
/// Bound on building the extension from scratch on a loaded 2-core machine.
const BUILD_WAIT: Duration = Duration::from_secs(1200);
/// Bound on the pytest run.
const PYTEST_WAIT: Duration = Duration::from_secs(300);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds `clients/python` and installs it into the venv.
fn install_package(python: &Path) {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-client-target");
    let mut pip = command(
        python,
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-build-isolation",
            "--force-reinstall",
            "--no-deps",
            "./clients/python",
        ],
    );
    // maturin's build hook runs `maturin` from PATH: the venv's.
    let venv_bin = python.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(venv_bin.to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .unwrap_or(path);
    pip.current_dir(manifest_dir())
        .env("PATH", path)
        // Its own target dir: the one of this `cargo test` is locked while
        // it runs.
        .env("CARGO_TARGET_DIR", &target)
        .env("MATURIN_PEP517_ARGS", format!("--profile {PROFILE}"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let started = std::time::Instant::now();
    let finished = run_command(pip, b"", BUILD_WAIT);
    eprintln!(
        "pip install ./clients/python (profile {PROFILE}): {:.0?}",
        started.elapsed()
    );
    if let Err(why) = check(&finished, "pip install ./clients/python") {
        panic!("the Python package does not build: {why}");
    }
}

#[test]
fn python_client_suite_passes_against_a_3_node_cluster() {
    let requirements = manifest_dir().join("clients/python/tests/requirements.txt");
    let python = match venv(
        "python-client-venv",
        &requirements,
        REQUIREMENTS,
        Duration::from_secs(180),
    ) {
        Ok(python) => python,
        Err(why) if !required("RAFTLOG_PYTHON_CLIENT") => {
            eprintln!(
                "SKIPPED: the Python client test needs python3 and PyPI (maturin, pytest) and \
                 could not set them up; set CI or RAFTLOG_PYTHON_CLIENT=1 to make that a \
                 failure.\n{why}"
            );
            return;
        }
        Err(why) => panic!("python client venv: {why}"),
    };
    install_package(&python);
    let mut pytest = command(
        &python,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--durations=5",
            "clients/python/tests",
        ],
    );
    pytest
        .current_dir(manifest_dir())
        .env("RAFTLOG_BIN", RAFTLOG)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("RAFTLOG_CLUSTER")
        .env_remove("RAFTLOG_TLS_DIR");
    let started = std::time::Instant::now();
    let finished = run_command(pytest, b"", PYTEST_WAIT);
    eprintln!("pytest clients/python/tests: {:.0?}", started.elapsed());
    print!("{}", finished.stdout);
    eprint!("{}", finished.stderr);
    assert!(
        finished.status.success(),
        "the Python client suite failed ({}); output above",
        finished.status
    );
    assert!(
        finished.stdout.contains(" passed"),
        "pytest ran no test:\n{}",
        finished.stdout
    );
}
