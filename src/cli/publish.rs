//! `raftlog publish`: stdin lines in (as records, or as JSON with `--input
//! json`), one committed index per line out.

use std::io::{BufRead, Write};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::args::{OutputFormat, PublishArgs};
use super::input::{InputError, LineParser};
use super::output::index_json;
use crate::client::{AppendTicket, Publisher, PublisherOptions};

/// Batches read ahead of the network, per in-flight append.
const READ_AHEAD_BATCHES: usize = 2;
/// stdin's read buffer: one read of a busy pipe fills many batches.
const STDIN_BUFFER_BYTES: usize = 256 * 1024;

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.batch > crate::wire::client::RECORDS_PER_APPEND_MAX {
        anyhow::bail!(
            "--batch must be between 1 and {}",
            crate::wire::client::RECORDS_PER_APPEND_MAX
        );
    }
    if args.inflight == 0 {
        anyhow::bail!("--inflight must be at least 1");
    }
    let config = super::client_config(&args.cluster);
    let mut publisher = Publisher::connect(
        config,
        PublisherOptions {
            producer_id: args.producer_id,
            first_sequence: args.first_seq,
            inflight_max: args.inflight,
        },
    )
    .await?;

    // stdin is read on a blocking thread, a batch at a time, so a large input
    // streams through without being held in memory. A batch goes out when it
    // is full or when stdin has nothing more ready (the read buffer is empty
    // and the next read would wait), so `tail -f app.log | raftlog publish`
    // sends each line as it comes while a piped file still fills batches.
    let (batch_tx, mut batch_rx) =
        mpsc::channel::<Result<Vec<Bytes>, InputError>>(args.inflight * READ_AHEAD_BATCHES);
    let batch_size = args.batch;
    let mut parser = LineParser::new(args.input);
    let reader = tokio::task::spawn_blocking(move || {
        let mut stdin = std::io::BufReader::with_capacity(STDIN_BUFFER_BYTES, std::io::stdin());
        let mut batch = Vec::with_capacity(batch_size);
        loop {
            let mut line = Vec::new();
            let record = match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    parser.parse(line)
                }
                Err(error) => Err(InputError::Read(error)),
            };
            match record {
                Ok(record) => batch.push(record),
                Err(error) => {
                    // The lines before the bad one are still appended (and
                    // their indexes printed); nothing after it is read.
                    if !batch.is_empty() && batch_tx.blocking_send(Ok(batch)).is_err() {
                        return;
                    }
                    let _ = batch_tx.blocking_send(Err(error));
                    return;
                }
            }
            if batch.len() >= batch_size || stdin.buffer().is_empty() {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                if batch_tx.blocking_send(Ok(full)).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = batch_tx.blocking_send(Ok(batch));
        }
    });

    // Indexes are printed in input order: tickets are awaited in send order.
    let (ticket_tx, mut ticket_rx) = mpsc::channel::<AppendTicket>(args.inflight);
    let output = args.output;
    let printer = tokio::spawn(async move {
        let stdout = std::io::stdout();
        while let Some(ticket) = ticket_rx.recv().await {
            let indexes = ticket.await?;
            let mut out = stdout.lock();
            for index in indexes {
                match output {
                    OutputFormat::Text => writeln!(out, "{index}"),
                    OutputFormat::Json => writeln!(out, "{}", index_json(index)),
                }
                .context("cannot write to stdout")?;
            }
            out.flush().context("cannot write to stdout")?;
        }
        anyhow::Ok(())
    });

    let mut send_result = Ok(());
    while let Some(batch) = batch_rx.recv().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                send_result = Err(error.into());
                break;
            }
        };
        match publisher.send(batch).await {
            Ok(ticket) => {
                if ticket_tx.send(ticket).await.is_err() {
                    break; // the printer stopped on an error, reported below
                }
            }
            Err(error) => {
                send_result = Err(error.into());
                break;
            }
        }
    }
    drop(ticket_tx);
    drop(batch_rx);
    let printed = printer.await.context("output task panicked")?;
    publisher.close().await;
    // The reader ends once its channel is closed; it cannot block forever on stdin
    // because the process exits after this returns.
    drop(reader);
    // When both failed, the printer holds the batch's own error (say,
    // permission denied); the sender only saw the publisher close after it.
    printed?;
    send_result
}
