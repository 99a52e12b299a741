//! Running commands with captured output, bounded time, and loud failures.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Default bound for [`run`] and [`run_unchecked`]: long enough for a big
/// `cp` through a FUSE mount on a slow machine, short enough that a hung
/// filesystem fails the test instead of the CI job.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// `prog 'arg 1' arg2` with environment overrides and cwd, for messages.
pub fn command_line(cmd: &Command) -> String {
    let mut s = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        s.push_str(&format!("(cd {} && ", dir.display()));
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => s.push_str(&format!(
                "{}={} ",
                k.to_string_lossy(),
                quote(&v.to_string_lossy())
            )),
            None => s.push_str(&format!("-u {} ", k.to_string_lossy())),
        }
    }
    s.push_str(&quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(&a.to_string_lossy()));
    }
    if cmd.get_current_dir().is_some() {
        s.push(')');
    }
    s
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Human-readable report of a finished command.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        command_line(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured), panicking
/// with the command line, status and both outputs unless it exits 0 within
/// [`DEFAULT_TIMEOUT`].
pub fn run(cmd: &mut Command) -> Output {
    run_timeout(cmd, DEFAULT_TIMEOUT)
}

/// [`run`], returning stdout as a (lossy) string.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// [`run`] with an explicit time bound.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let out = run_unchecked_timeout(cmd, timeout);
    if !out.status.success() {
        panic!("command failed\n{}", describe(cmd, &out));
    }
    out
}

/// Runs `cmd` and returns its output whatever the exit status; panics only
/// if it cannot be started or does not finish within [`DEFAULT_TIMEOUT`].
pub fn run_unchecked(cmd: &mut Command) -> Output {
    run_unchecked_timeout(cmd, DEFAULT_TIMEOUT)
}

/// Runs `cmd` and returns its output whatever the exit status; panics if it
/// cannot be started or runs longer than `timeout` (it is then killed; the
/// panic message has what it printed so far).
pub fn run_unchecked_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    match try_run(cmd, timeout) {
        Ok(out) => out,
        Err(TimedOut { stdout, stderr }) => panic!(
            "command did not finish within {:?} (killed)\ncommand: {}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
            timeout,
            command_line(cmd),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// What a command had printed when it was killed for running too long.
#[derive(Debug)]
pub struct TimedOut {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` with a time bound; `Err` if it had to be killed. Use this to
/// assert that something (say `ls` on a mount whose registry is dead) does
/// *not* hang.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, TimedOut> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", command_line(cmd)));
    let out_t = reader_thread(child.stdout.take());
    let err_t = reader_thread(child.stderr.take());
    let status = wait_timeout(&mut child, timeout);
    match status {
        Some(status) => Ok(Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        }),
        None => {
            let _ = child.kill();
            // A process stuck in the kernel (a hung FUSE request) may not
            // die at once: wait a little, then leave it rather than hang.
            if wait_timeout(&mut child, Duration::from_secs(5)).is_some() {
                Err(TimedOut {
                    stdout: out_t.join().unwrap_or_default(),
                    stderr: err_t.join().unwrap_or_default(),
                })
            } else {
                Err(TimedOut {
                    stdout: Vec::new(),
                    stderr: b"(process did not die after SIGKILL)".to_vec(),
                })
            }
        }
    }
}

fn reader_thread<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Polls `child` until it exits or `timeout` passes (`None`).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls `f` until it returns `Some`, at most `timeout`; panics naming
/// `what` otherwise.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Polls `f` until it returns true, at most `timeout`; panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(timeout, what, || f().then_some(()))
}

/// Asserts a failed command exited non-zero with exactly one stderr line
/// starting with `regfs:`; returns that line.
pub fn assert_one_line_error(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: regfs succeeded; stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{what}: want one stderr line, got: {err:?}");
    assert!(
        lines[0].starts_with("regfs: "),
        "{what}: error line does not start with 'regfs: ': {:?}",
        lines[0]
    );
    lines[0].to_string()
}
