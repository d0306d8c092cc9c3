//! The testpmd oracle: feeds `flow` commands to Debian's `dpdk-testpmd` and classifies
//! each answer, so tests can assert that every emitted line parses.
//!
//! testpmd runs with `net_null0` and no hugepages or PCI:
//! `dpdk-testpmd -l 0-1 --no-huge --no-pci -m 256 --file-prefix P --vdev net_null0 --
//! -i --total-num-mbufs=2048`, commands on standard input. (With `--cmdline-file`
//! testpmd does not print "Bad arguments" at all, so a parse error would pass unseen;
//! standard input echoes every command after its `testpmd> ` prompt, so each answer can
//! be tied to its command.) `net_null` has no flow operations: a command that parsed
//! reaches the PMD and fails with "Function not implemented" ([`Verdict::ReachedPmd`]);
//! one that did not parse prints "Bad arguments" ([`Verdict::ParseError`]).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The testpmd binary Debian's `dpdk` package installs.
pub const TESTPMD: &str = "dpdk-testpmd";

/// What testpmd did with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It parsed, and the PMD answered (net_null: ENOSYS; a real PMD: created or refused).
    ReachedPmd(String),
    /// testpmd's parser rejected it ("Bad arguments").
    ParseError,
    /// No answer was seen (testpmd stopped early, or the command was not echoed).
    NoAnswer,
}

/// One command and its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The command sent.
    pub command: String,
    /// What happened.
    pub verdict: Verdict,
}

/// Why the oracle could not run.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// testpmd is not installed.
    #[error("{TESTPMD} not found (install Debian's `dpdk` package)")]
    NotInstalled,
    /// Running it failed.
    #[error("running {TESTPMD}: {0}")]
    Io(#[from] std::io::Error),
    /// It exited without "Bye...": EAL or port setup failed.
    #[error("{TESTPMD} failed to start: {0}")]
    Start(String),
}

/// Whether testpmd is on the `PATH`.
pub fn testpmd_available() -> bool {
    Command::new(TESTPMD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `commands` through testpmd and returns one answer per command, in order.
pub fn run(commands: &[String]) -> Result<Vec<Answer>, OracleError> {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "pipec-oracle-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let log_path: PathBuf = std::env::temp_dir().join(format!("{prefix}.log"));
    let log = File::create(&log_path)?;
    let mut child = match Command::new(TESTPMD)
        .args(["-l", "0-1", "--no-huge", "--no-pci", "-m", "256"])
        .args(["--file-prefix", &prefix, "--vdev", "net_null0"])
        .args(["--", "-i", "--total-num-mbufs=2048"])
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OracleError::NotInstalled)
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let mut script = String::from("\n");
        for c in commands {
            script.push_str(c);
            script.push('\n');
        }
        script.push_str("quit\n");
        // testpmd may exit early on a setup failure; the log tells, so a broken pipe is
        // not an error of its own.
        let _ = stdin.write_all(script.as_bytes());
    }
    child.wait()?;
    let output = std::fs::read_to_string(&log_path)?;
    let _ = std::fs::remove_file(&log_path);
    for dir in ["/var/run/dpdk", "/run/dpdk"] {
        let _ = std::fs::remove_dir_all(format!("{dir}/{prefix}"));
    }
    if !output.contains("Bye...") {
        let tail: Vec<&str> = output.lines().rev().take(8).collect();
        return Err(OracleError::Start(
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        ));
    }
    Ok(classify(commands, &output))
}

/// Ties each command to the answer printed after its echo.
pub fn classify(commands: &[String], output: &str) -> Vec<Answer> {
    // Each echoed command starts a block; the block's other lines are its answer.
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    for line in output.lines() {
        if let Some(cmd) = line.strip_prefix("testpmd> ") {
            blocks.push((cmd.trim_end().to_string(), Vec::new()));
        } else if let Some(b) = blocks.last_mut() {
            b.1.push(line);
        }
    }
    let mut next = 0;
    commands
        .iter()
        .map(|c| {
            let found = blocks[next..]
                .iter()
                .position(|(cmd, _)| cmd == c.trim_end());
            let verdict = match found {
                None => Verdict::NoAnswer,
                Some(i) => {
                    let (_, answer) = &blocks[next + i];
                    next += i + 1;
                    if answer.iter().any(|l| l.contains("Bad arguments")) {
                        Verdict::ParseError
                    } else if let Some(l) = answer.iter().find(|l| {
                        l.contains("Caught PMD error")
                            || l.starts_with("Flow rule #")
                            || l.contains("Flow rule validated")
                    }) {
                        Verdict::ReachedPmd((*l).to_string())
                    } else {
                        Verdict::NoAnswer
                    }
                }
            };
            Answer {
                command: c.clone(),
                verdict,
            }
        })
        .collect()
}
