//! Python venvs for the tests that drive a Python suite (the aioquic
//! interop test, the Python client's pytest suite): made under the target
//! dir, reused while their pinned requirements are unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{run_command, Finished};

/// With `CI` set, or `opt_in` set to `1`, a venv that cannot be made fails
/// the test instead of skipping it.
pub fn required(opt_in: &str) -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var(opt_in).is_ok_and(|v| v == "1")
}

pub fn command(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// `Err` with the command's output unless it exited 0.
pub fn check(finished: &Finished, what: &str) -> Result<(), String> {
    if finished.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            finished.status, finished.stdout, finished.stderr
        ))
    }
}

/// The python of venv `name` under the target dir, with `requirements`
/// (the text of the file at `requirements_path`) installed; made again when
/// that text changed. `Err` says why it could not be made.
pub fn venv(
    name: &str,
    requirements_path: &Path,
    requirements: &str,
    pip_wait: Duration,
) -> Result<PathBuf, String> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin").join("python");
    let stamp = venv.join("requirements.installed");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let utf8 = |path: &Path| {
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{} is not UTF-8", path.display()))
    };
    let made = run_command(
        command(Path::new("python3"), &["-m", "venv", &utf8(&venv)?]),
        b"",
        Duration::from_secs(60),
    );
    check(&made, "python3 -m venv")?;
    let installed = run_command(
        command(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "20",
                "-r",
                &utf8(requirements_path)?,
            ],
        ),
        b"",
        pip_wait,
    );
    check(
        &installed,
        &format!("pip install -r {}", requirements_path.display()),
    )?;
    std::fs::write(&stamp, requirements)
        .map_err(|error| format!("{}: {error}", stamp.display()))?;
    Ok(python)
}
