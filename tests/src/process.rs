//! One control-plane process: spawned in its own process group with its
//! output in a log file, probed until ready under a deadline, and killed
//! (the whole group) when dropped, which also happens while a panicking test
//! unwinds.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::{HarnessError, Result};

/// Lines of a component's log quoted in errors.
const TAIL_LINES: usize = 40;
/// How long a component gets to exit on SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Longest a single probe may take; a hung probe must not eat the deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running component of the control plane.
#[derive(Debug)]
pub struct Component {
    name: String,
    child: Child,
    log: PathBuf,
    /// Set once the process has been reaped; its pid may then be reused, so
    /// it must not be signalled any more.
    reaped: bool,
}

impl Component {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// Like [`Component::spawn`], with extra environment variables (for
    /// example `KUBECONFIG` for a component that takes no flag for it).
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Self> {
        let out = File::create(&log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io(format!("duplicating {}", log.display()), e))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group, so teardown reaches anything it spawns and a
            // Ctrl-C aimed at the test runner is not what stops it.
            .process_group(0)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                component: name.to_owned(),
                program: program.to_owned(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            reaped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the component's log.
    pub fn log_tail(&self) -> String {
        tail_of_file(&self.log, TAIL_LINES)
    }

    /// Fails with the log tail if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.reaped = true;
                Err(self.exited(status.to_string()))
            }
            Err(e) => Err(HarnessError::io(format!("checking on {}", self.name), e)),
        }
    }

    fn exited(&self, status: String) -> HarnessError {
        HarnessError::Exited {
            component: self.name.clone(),
            status,
            log: self.log.clone(),
            tail: self.log_tail(),
        }
    }

    /// Runs `probe` until it succeeds, the process exits, or `timeout` passes.
    /// Both failures carry the log tail.
    pub async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<(), String>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_probe = String::from("no probe finished");
        loop {
            self.ensure_running()?;
            let left = deadline.saturating_duration_since(Instant::now());
            let allowed = left.min(PROBE_TIMEOUT);
            match tokio::time::timeout(allowed, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(why)) => last_probe = why,
                // A probe cut short by the deadline says nothing new; keep
                // the previous, more telling answer.
                Err(_) if allowed < PROBE_TIMEOUT => {}
                Err(_) => last_probe = format!("no answer within {PROBE_TIMEOUT:?}"),
            }
            if Instant::now() >= deadline {
                // A process that died during the last probe explains more
                // than "not ready" does.
                self.ensure_running()?;
                return Err(HarnessError::NotReady {
                    component: self.name.clone(),
                    timeout,
                    last_probe,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL.min(left)).await;
        }
    }

    /// Kills the process group outright (SIGKILL, no chance to clean up, as
    /// when a node dies) and reaps the process.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        if !self.reaped {
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        self.reaped || matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
    }

    /// Asks the process group to stop; [`Component::reap`] finishes the job.
    pub fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
    }

    /// Waits up to the grace period for the process to exit, then kills the
    /// whole group and waits for it.
    pub fn reap(&mut self) {
        let deadline = Instant::now() + GRACE;
        while !self.reaped && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => self.reaped = true,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Whatever ignored SIGTERM is killed, group and all.
        self.signal(Signal::SIGKILL);
        if !self.reaped {
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    fn signal(&self, signal: Signal) {
        if self.reaped {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // ESRCH (already gone) is the expected outcome during teardown.
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.terminate();
        self.reap();
    }
}

/// The last `lines` lines of a file, read from its end so huge logs are cheap.
pub fn tail_of_file(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(log is empty)".to_owned()
    } else {
        tail
    }
}

/// Whether a process with this pid exists (a zombie counts as gone: it has
/// exited and only awaits its parent).
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Live processes whose parent is this process: after a control plane is
/// dropped there must be none left from it.
pub fn live_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    let mut fields = rest.split_whitespace();
                    let state = fields.next()?;
                    let ppid = fields.next()?.parse::<u32>().ok()?;
                    Some(ppid == me && state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        let tail = tail_of_file(&path, 3);
        assert_eq!(tail, "line 97\nline 98\nline 99");
    }

    #[tokio::test]
    async fn early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = vec!["-c".to_owned(), "echo boom-from-child; exit 3".to_owned()];
        let mut child =
            Component::spawn("sh", Path::new("/bin/sh"), &args, dir.path().join("sh.log"))
                .expect("spawn");
        let err = child
            .wait_ready(Duration::from_secs(10), || async {
                Err("not yet".to_owned())
            })
            .await
            .expect_err("the child exits");
        let message = err.to_string();
        assert!(matches!(err, HarnessError::Exited { .. }), "{message}");
        assert!(message.contains("boom-from-child"), "{message}");
    }

    #[tokio::test]
    async fn readiness_has_a_deadline_and_drop_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A shell with a child of its own: both must die on drop.
        let args = vec!["-c".to_owned(), "sleep 300 & echo $!; wait".to_owned()];
        let mut child =
            Component::spawn("sh", Path::new("/bin/sh"), &args, dir.path().join("sh.log"))
                .expect("spawn");
        let started = Instant::now();
        let err = child
            .wait_ready(Duration::from_millis(600), || async {
                Err("never ready".to_owned())
            })
            .await
            .expect_err("never ready");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, HarnessError::NotReady { .. }), "{err}");
        assert!(err.to_string().contains("never ready"), "{err}");
        // The grandchild's pid, as the shell printed it.
        let log = child.log_path().to_owned();
        let grandchild: u32 = std::fs::read_to_string(&log)
            .expect("log")
            .trim()
            .parse()
            .expect("the shell printed its child's pid");
        let pid = child.pid();
        assert!(is_alive(grandchild));
        drop(child);
        assert!(!is_alive(pid), "the shell survived");
        assert!(!is_alive(grandchild), "the shell's child survived");
    }
}
