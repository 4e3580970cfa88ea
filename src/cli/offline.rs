//! `raftlog verify` and `raftlog dump`: offline reads of a node's data directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::args::{DumpArgs, VerifyArgs};
use crate::storage::{dump, verify};

/// Prints one line per problem (file:offset: what; damage as
/// `file:offset: damaged entries A..B: reason`) and a `repair pending: ...`
/// line for a repair marker on stdout; exit 1 if any problem (a marker alone
/// is not one).
pub fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify::verify_data_dir(&args.data_dir)
        .with_context(|| format!("cannot verify {}", args.data_dir.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for problem in &report.problems {
        writeln!(out, "{problem}").context("cannot write to stdout")?;
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    if let Some(marker) = &report.repair {
        // A node that is repairing: not damage on its own (exit 0).
        let mut line = format!("repair pending: until index {}", marker.until_index);
        if marker.hard_state_lost {
            line.push_str(", hard state lost");
        }
        if let Some(cut) = marker.cut_from {
            line.push_str(&format!(", cut pending from index {cut}"));
        }
        writeln!(out, "{line}").context("cannot write to stdout")?;
    }
    if report.is_clean() {
        let range = match (report.first_index, report.last_index) {
            (Some(first), Some(last)) => format!("entries {first}..{last}"),
            _ => "no entries".to_string(),
        };
        writeln!(
            out,
            "ok: {}: {} entries checked ({range}) in {} segments",
            args.data_dir.display(),
            report.entries_checked,
            report.segments_checked
        )
        .context("cannot write to stdout")?;
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} problem(s) in {}",
            report.problems.len(),
            args.data_dir.display()
        );
        Ok(ExitCode::from(super::EXIT_FAILURE))
    }
}

/// Prints every stored entry from `--from` as one JSON object per line.
pub fn run_dump(args: DumpArgs) -> anyhow::Result<()> {
    let entries = dump::dump_entries(&args.data_dir, args.from)
        .with_context(|| format!("cannot open {}", args.data_dir.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", args.data_dir.display()))?;
        writeln!(out, "{}", dump::dump_json_line(&entry)).context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")
}
