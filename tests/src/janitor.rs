//! Cleans up after control planes whose test process died without running
//! Drop (killed by a CI timeout, SIGKILL, abort). Every control plane records
//! its owner's pid and its components' process groups in its directory; a
//! later start kills the groups of any directory whose owner is gone.

use std::io::Write;
use std::path::Path;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::{HarnessError, Result};
use crate::process::is_alive;

/// Prefix of every control plane's directory under the temp dir.
pub const DIR_PREFIX: &str = "phalanx-e2e-";
const OWNER_FILE: &str = "owner.pid";
const GROUPS_FILE: &str = "groups";

/// Marks `dir` as belonging to this process.
pub fn record_owner(dir: &Path) -> Result<()> {
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, std::process::id().to_string())
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

/// Records a component's process group in `dir`.
pub fn record_group(dir: &Path, pgid: u32) -> Result<()> {
    let path = dir.join(GROUPS_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{pgid}"))
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

/// Kills the leftovers of dead owners under `root` and removes their
/// directories; returns how many process groups were signalled. Best effort:
/// cleanup problems must not fail the test that happens to find them.
pub fn reap_orphans_in(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DIR_PREFIX));
        let Some(owner) = read_pid(&dir.join(OWNER_FILE)) else {
            continue;
        };
        if !is_ours || is_alive(owner) {
            continue;
        }
        let groups = std::fs::read_to_string(dir.join(GROUPS_FILE)).unwrap_or_default();
        for pgid in groups.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            // Only a process whose command line names this directory is one
            // of ours; a recycled pid belongs to someone else.
            if command_line_mentions(pgid, &dir) {
                if let Ok(raw) = i32::try_from(pgid) {
                    let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
                    killed += 1;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    killed
}

/// [`reap_orphans_in`] for the system temp dir, where control planes live.
pub fn reap_orphans() -> usize {
    reap_orphans_in(&std::env::temp_dir())
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn command_line_mentions(pid: u32, dir: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    raw.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    // Ignored in CI: it raced with the child's exec and once left its `sleep`
    // children behind; run it by hand with `--ignored` until that is fixed.
    #[test]
    #[ignore = "races with the child's exec; see the comment above"]
    fn kills_the_groups_of_a_dead_owner_only() {
        let root = tempfile::tempdir().expect("tempdir");
        // A pid that certainly has no process any more.
        let mut gone = Command::new("/bin/true").spawn().expect("spawn true");
        let dead_pid = gone.id();
        gone.wait().expect("wait");

        let orphan_dir = root.path().join(format!("{DIR_PREFIX}orphan"));
        let live_dir = root.path().join(format!("{DIR_PREFIX}live"));
        let mut children = Vec::new();
        for (dir, owner) in [(&orphan_dir, dead_pid), (&live_dir, std::process::id())] {
            std::fs::create_dir(dir).expect("mkdir");
            std::fs::write(dir.join(OWNER_FILE), owner.to_string()).expect("owner");
            let script = format!("sleep 300; : {}", dir.display());
            let child = Command::new("/bin/sh")
                .args(["-c", &script])
                .process_group(0)
                .spawn()
                .expect("spawn");
            record_group(dir, child.id()).expect("record");
            // Right after spawn the child may not have exec'd yet, and its command
            // line is still the test binary's; real orphans exec'd long ago.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !command_line_mentions(child.id(), dir) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            children.push(child);
        }

        assert_eq!(reap_orphans_in(root.path()), 1);
        assert!(!orphan_dir.exists(), "the orphan's directory is removed");
        assert!(live_dir.exists(), "a live owner's directory is kept");

        let mut orphan = children.remove(0);
        let mut live = children.remove(0);
        let status = orphan.wait().expect("wait");
        assert!(!status.success(), "the orphan's group was killed");
        assert!(is_alive(live.id()), "a live owner's group is left alone");
        live.kill().expect("kill");
        live.wait().expect("wait");
    }
}
