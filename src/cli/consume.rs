//! `raftlog consume`: committed records in index order, from a cursor.

use std::io::Write;

use anyhow::Context;

use super::args::{ConsumeArgs, OutputFormat};
use super::output::record_json;
use crate::client::{Consumer, ConsumerOptions, StartFrom};

pub fn parse_from(text: &str) -> anyhow::Result<StartFrom> {
    match text {
        "start" => Ok(StartFrom::Start),
        "end" => Ok(StartFrom::End),
        number => number
            .parse::<u64>()
            .ok()
            .filter(|&index| index >= 1)
            .map(StartFrom::Index)
            .with_context(|| {
                format!("--from must be `start`, `end` or an index >= 1, got `{number}`")
            }),
    }
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let from = parse_from(&args.from)?;
    if args.limit == Some(0) {
        // Nothing to print, so nothing to ask (and no cursor to move).
        return Ok(());
    }
    let mut consumer = Consumer::connect(
        super::client_config(&args.cluster),
        ConsumerOptions {
            from,
            follow: args.follow,
        },
    )
    .await?;
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    while let Some(batch) = consumer.next_batch().await? {
        if let Some(skipped) = consumer.skipped() {
            // Said once per skip, on stderr: stdout stays the records only.
            let next = skipped.end().saturating_add(1);
            eprintln!(
                "raftlog: records below {next} were removed by retention; continuing at {next}"
            );
        }
        let mut out = std::io::BufWriter::new(stdout.lock());
        for record in batch {
            match args.output {
                OutputFormat::Text => out
                    .write_all(&record.data)
                    .and_then(|()| out.write_all(b"\n")),
                OutputFormat::Json => writeln!(out, "{}", record_json(record.index, &record.data)),
            }
            .context("cannot write to stdout")?;
            printed += 1;
            if Some(printed) == args.limit {
                out.flush().context("cannot write to stdout")?;
                return Ok(());
            }
        }
        out.flush().context("cannot write to stdout")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_accepts_start_end_and_positive_indexes_only() {
        assert_eq!(parse_from("start").unwrap(), StartFrom::Start);
        assert_eq!(parse_from("end").unwrap(), StartFrom::End);
        assert_eq!(parse_from("42").unwrap(), StartFrom::Index(42));
        assert!(parse_from("0").is_err());
        assert!(parse_from("-1").is_err());
        assert!(parse_from("begin").is_err());
    }
}
