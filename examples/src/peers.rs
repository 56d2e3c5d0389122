//! The Python peers (`benches/peers/setup.sh` makes their venv): tests run scripts on
//! them to write tables the way other engines do, then read those tables here.

use std::ffi::OsStr;
use std::process::Command;

/// The peers' Python, from `LAKEHOUSE_PEERS_PYTHON`; `None` when it is not set, after a
/// line on stderr saying that `what` is skipped.
pub fn python(what: &str) -> Option<String> {
    match std::env::var("LAKEHOUSE_PEERS_PYTHON") {
        Ok(python) => Some(python),
        Err(_) => {
            eprintln!("LAKEHOUSE_PEERS_PYTHON is not set: skipping {what}");
            None
        }
    }
}

/// Runs the Python source `script` with `args` (`sys.argv[1..]`). Errors with the
/// script's standard error when it cannot start or does not succeed.
pub fn run_script<A: AsRef<OsStr>>(python: &str, script: &str, args: &[A]) -> Result<(), String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
