//! The testpmd oracle: feeds `flow` commands to Debian's `dpdk-testpmd` and classifies
//! each answer, so tests can assert that every emitted line parses.
//!
//! testpmd runs with one `net_null` device per port the commands name and no hugepages or
//! PCI: `dpdk-testpmd -l 0-1 --no-huge --no-pci -m 256 --file-prefix P --vdev net_null0
//! [--vdev net_null1 ...] -- -i --total-num-mbufs=2048`, commands on standard input. A
//! slice has rules on several ports (the uplink, port 0, and each pod's port, numbered by
//! its endpoint); ethdev ports are numbered in device order, so devices `net_null0` to
//! `net_nullN` are ports 0 to N and the lines run as written. Debian's DPDK has at most
//! [`MAX_PORTS`] ports: commands naming a port beyond it run with their ports renumbered
//! densely (the same grammar, so the same parse), in one testpmd run per [`MAX_PORTS`]
//! distinct ports. (With `--cmdline-file`
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

/// `RTE_MAX_ETHPORTS` of Debian's DPDK 22.11 build: a 33rd `net_null` device fails to probe
/// ("Reached maximum number of Ethernet ports").
pub const MAX_PORTS: u16 = 32;

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
    /// The commands name more distinct ports than testpmd can have.
    #[error("the commands name {0} ports; {TESTPMD} has at most {MAX_PORTS}")]
    TooManyPorts(usize),
}

/// The port a `flow` command names (`flow create 3 ...` → 3), if it names one.
pub fn command_port(command: &str) -> Option<u16> {
    let mut words = command.split_whitespace();
    if words.next()? != "flow" {
        return None;
    }
    words.next()?;
    words.next()?.parse().ok()
}

/// The commands as testpmd runs them, and how many `net_null` devices it needs: as written
/// when every port is below [`MAX_PORTS`], else with the ports renumbered densely in order.
pub(crate) fn with_ports(commands: &[String]) -> Result<(Vec<String>, u16), OracleError> {
    let ports: std::collections::BTreeSet<u16> =
        commands.iter().filter_map(|c| command_port(c)).collect();
    let max = ports.iter().next_back().copied().unwrap_or(0);
    if max < MAX_PORTS {
        return Ok((commands.to_vec(), max + 1));
    }
    if ports.len() > usize::from(MAX_PORTS) {
        return Err(OracleError::TooManyPorts(ports.len()));
    }
    let dense: std::collections::BTreeMap<u16, usize> =
        ports.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let renumbered = commands
        .iter()
        .map(|c| match command_port(c) {
            Some(p) => {
                let mut words: Vec<String> = c.split_whitespace().map(str::to_string).collect();
                words[2] = dense[&p].to_string();
                words.join(" ")
            }
            None => c.clone(),
        })
        .collect();
    Ok((renumbered, ports.len() as u16))
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

/// Runs `commands` through testpmd and returns one answer per command, in order: in one
/// run, or with more than [`MAX_PORTS`] distinct ports, one run per that many of them (the
/// commands naming no port go with the first).
pub fn run(commands: &[String]) -> Result<Vec<Answer>, OracleError> {
    let ports: Vec<u16> = commands
        .iter()
        .filter_map(|c| command_port(c))
        .collect::<std::collections::BTreeSet<u16>>()
        .into_iter()
        .collect();
    if ports.len() <= usize::from(MAX_PORTS) {
        return run_one(commands);
    }
    let mut answers: Vec<Option<Answer>> = vec![None; commands.len()];
    for (k, group) in ports.chunks(usize::from(MAX_PORTS)).enumerate() {
        let picked: Vec<usize> = (0..commands.len())
            .filter(|i| match command_port(&commands[*i]) {
                Some(p) => group.contains(&p),
                None => k == 0,
            })
            .collect();
        let batch: Vec<String> = picked.iter().map(|i| commands[*i].clone()).collect();
        for (i, a) in picked.into_iter().zip(run_one(&batch)?) {
            answers[i] = Some(a);
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

/// [`run`] for commands of at most [`MAX_PORTS`] distinct ports.
fn run_one(commands: &[String]) -> Result<Vec<Answer>, OracleError> {
    let (sent, devices) = with_ports(commands)?;
    let mut answers = run_on(&sent, devices)?;
    for (a, c) in answers.iter_mut().zip(commands) {
        a.command = c.clone();
    }
    Ok(answers)
}

/// Runs `commands` through testpmd with `devices` `net_null` ports.
fn run_on(commands: &[String], devices: u16) -> Result<Vec<Answer>, OracleError> {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "pipec-oracle-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let log_path: PathBuf = std::env::temp_dir().join(format!("{prefix}.log"));
    let log = File::create(&log_path)?;
    let vdevs = (0..devices).flat_map(|i| ["--vdev".to_string(), format!("net_null{i}")]);
    let mut child = match Command::new(TESTPMD)
        .args(["-l", "0-1", "--no-huge", "--no-pci", "-m", "256"])
        .args(["--file-prefix", &prefix])
        .args(vdevs)
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
