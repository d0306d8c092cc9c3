//! `pipec conformance DIR`: conformance cases through every engine.

use clap::Args;
use pipec::conformance;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `pipec conformance`.
#[derive(Args, Debug)]
pub(crate) struct ConformanceArgs {
    /// Directories of case files (searched recursively), or single case files.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Run only this engine (repeatable); every available engine by default.
    #[arg(long = "engine", value_name = "NAME")]
    engines: Vec<String>,
}

/// Runs `pipec conformance`: one line per failing check, then `N passed, M failed`.
pub(crate) fn run(args: &ConformanceArgs) -> anyhow::Result<ExitCode> {
    let engines = if args.engines.is_empty() {
        engines()
    } else {
        args.engines
            .iter()
            .map(|n| engine_by_name(n))
            .collect::<Result<Vec<_>, String>>()
            .map_err(anyhow::Error::msg)?
    };
    let report = conformance::run_paths(&args.dirs, &engines).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    for line in &report.lines {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "{}", report.summary())?;
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every engine of this build: the library's, then the targets' (`ebpf`).
fn engines() -> Vec<Box<dyn conformance::Engine>> {
    let mut v = conformance::available_engines();
    v.push(Box::new(pipec_ebpf::EbpfEngine));
    v
}

/// The engine called `name`, among the library's and the targets'.
fn engine_by_name(name: &str) -> Result<Box<dyn conformance::Engine>, String> {
    if let Some(e) = engines().into_iter().find(|e| e.name() == name) {
        return Ok(e);
    }
    let available: Vec<&str> = engines().iter().map(|e| e.name()).collect();
    match conformance::engine_by_name(name) {
        Ok(e) => Ok(e),
        Err(_) => Err(format!(
            "unknown or unbuilt engine `{name}`; available: {}",
            available.join(", ")
        )),
    }
}
