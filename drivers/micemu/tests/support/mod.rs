//! What more than one test binary needs.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Runs `program args` as `nobody` (uid/gid 65534), `stdin` (if any) as its
/// standard input: (succeeded, stdout, stderr).
pub(crate) fn run_as_nobody(program: &str, args: &[&OsStr], stdin: Option<File>) -> (bool, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args).uid(65534).gid(65534);
    if let Some(f) = stdin {
        cmd.stdin(f);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
