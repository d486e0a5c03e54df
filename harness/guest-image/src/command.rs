//! Running the build's tools (apt, dpkg-deb, ldd, busybox) and quoting them in errors.

use std::process::{Child, Command, Stdio};

use crate::{ImageError, Result};

/// Runs a command with the C locale (parsable output), returns its stdout;
/// a failure reports its stderr and what to do.
pub(crate) fn run_stdout(
    cmd: &mut Command,
    package: &'static str,
    hint: &'static str,
) -> Result<String> {
    cmd.env("LC_ALL", "C").env("LANG", "C").stdin(Stdio::null());
    let command = describe(cmd);
    let out = cmd.output().map_err(|source| ImageError::Spawn {
        command: command.clone(),
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(ImageError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 1500),
            hint,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `cmd` (its stdio already set up); `package` ships the tool.
pub(crate) fn spawn(cmd: &mut Command, package: &'static str) -> Result<Child> {
    cmd.spawn().map_err(|source| ImageError::Spawn {
        command: describe(cmd),
        package,
        source,
    })
}

/// The command line of `cmd`, shortened, for error messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    shorten(&s, 300)
}

/// The first `max` characters of `s`, with "..." when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The last `max` bytes of `s` (trimmed, on a character boundary), with "..." when cut.
pub(crate) fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}
