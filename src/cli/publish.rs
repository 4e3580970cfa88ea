//! `raftlog publish`: stdin lines in, one committed index per line out.

use std::io::{BufRead, Write};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::args::{OutputFormat, PublishArgs};
use super::output::index_json;
use crate::client::{AppendTicket, Publisher, PublisherOptions};

/// Batches read ahead of the network, per in-flight append.
const READ_AHEAD_BATCHES: usize = 2;

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
    // streams through without being held in memory.
    let (batch_tx, mut batch_rx) =
        mpsc::channel::<std::io::Result<Vec<Bytes>>>(args.inflight * READ_AHEAD_BATCHES);
    let batch_size = args.batch;
    let reader = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().split(b'\n');
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            for line in lines.by_ref().take(batch_size) {
                match line {
                    Ok(line) => batch.push(Bytes::from(line)),
                    Err(error) => {
                        let _ = batch_tx.blocking_send(Err(error));
                        return;
                    }
                }
            }
            if batch.is_empty() || batch_tx.blocking_send(Ok(batch)).is_err() {
                return;
            }
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
                send_result = Err(anyhow::Error::new(error).context("cannot read stdin"));
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
    send_result?;
    printed
}
