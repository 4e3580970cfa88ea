//! The `raftlog` command: parses the command line and runs one subcommand.
//!
//! Every error leaves as one line on stderr (`error: ...`) and a non-zero exit
//! code; stdout carries only data, so scripts can pipe it.

pub mod args;
mod bench;
mod config;
mod consume;
pub mod dev;
mod input;
mod offline;
pub mod output;
mod publish;
pub mod status;
mod units;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

pub use args::Cli;
use args::Command;

/// Exit code for a failed command (bad input, unreachable cluster, corrupt data).
pub const EXIT_FAILURE: u8 = 1;

/// Runs the command line given to the process and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader of stdout went away (`raftlog dump ... | head`): stop
        // quietly, as Unix tools do.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line: `what failed: why: deeper why`.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for (depth, cause) in error.chain().enumerate() {
        let text = cause.to_string();
        // thiserror messages often repeat their source; print each cause once.
        if depth > 0 && line.contains(&text) {
            continue;
        }
        if depth > 0 {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let server_side = matches!(cli.command, Command::Serve(_) | Command::Dev(_));
    init_logging(server_side, log_format(&cli.command));
    match cli.command {
        Command::Verify(args) => offline::run_verify(args),
        Command::Dump(args) => offline::run_dump(args).map(|()| ExitCode::SUCCESS),
        Command::Certs(args) => run_certs(args).map(|()| ExitCode::SUCCESS),
        Command::Completions(args) => print_completions(args.shell).map(|()| ExitCode::SUCCESS),
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run_async(command))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_async(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(config::serve_config(*args)?).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Status(args) => status::run_status(args).await,
        Command::Admin(args) => status::run_admin(args).await,
        Command::Bench(args) => bench::run(*args).await,
        Command::Verify(_) | Command::Dump(_) | Command::Certs(_) | Command::Completions(_) => {
            unreachable!("handled without a runtime")
        }
    }
}

/// The completion script, generated from the same grammar that parses the
/// command line, so it never lists a flag that does not exist.
fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "raftlog", &mut script);
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, &script).context("cannot write to stdout")?;
    std::io::Write::flush(&mut stdout).context("cannot write to stdout")
}

/// `serve --log-format`, or the config file's `log_format`: logging starts
/// before the config is resolved (so its errors are logged), hence this
/// early look at the file. A file that does not load is reported by
/// `serve_config` right after; here it just means the default.
fn log_format(command: &Command) -> args::LogFormat {
    let Command::Serve(args) = command else {
        return args::LogFormat::Text;
    };
    args.log_format
        .or_else(|| {
            let path = args.config.as_ref()?;
            config::load_file(path).ok()?.log_format
        })
        .unwrap_or_default()
}

/// Logs go to stderr, filtered by RUST_LOG (default: info for servers,
/// warnings only for client commands, whose stdout is data). Colour codes
/// only on a terminal: in a file or a journal they are noise.
fn init_logging(server_side: bool, format: args::LogFormat) {
    use std::io::IsTerminal;
    let default = if server_side { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        args::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // One JSON object per line, fields flattened to the top level so
        // shippers index them without unpacking a nested object.
        args::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
}

fn client_config(cluster: &args::ClusterArgs) -> crate::client::ClientConfig {
    crate::client::ClientConfig {
        cluster: cluster.cluster.clone(),
        tls_dir: cluster.tls_dir.clone(),
        request_timeout: std::time::Duration::from_millis(cluster.timeout_ms),
    }
}

fn run_certs(args: args::CertsArgs) -> anyhow::Result<()> {
    use crate::net::certs::{self, Role};
    match args.action {
        Some(args::CertsAction::AddNode { ca_dir, node, out }) => {
            let written = match &out {
                Some(out) => {
                    certs::add_node_to(&ca_dir, node.id, &node.addr, out)?;
                    out.clone()
                }
                None => {
                    certs::add_node(&ca_dir, node.id, &node.addr)?;
                    certs::node_bundle_dir(&ca_dir, node.id)
                }
            };
            eprintln!(
                "wrote a certificate for node {} ({}) signed by {}; copy {} to that node and start it with --tls-dir pointing there",
                node.id,
                node.addr,
                certs::ca_cert_path(&ca_dir).display(),
                written.display()
            );
            Ok(())
        }
        Some(args::CertsAction::Client {
            ca_dir,
            name,
            admin,
            out,
        }) => {
            let role = if admin { Role::Admin } else { Role::Client };
            let out = out.unwrap_or_else(|| ca_dir.join("clients").join(&name));
            certs::issue_client(&ca_dir, &name, role, &out)?;
            let (cert, _) = certs::identity_paths(&out, role);
            eprintln!(
                "wrote the {role} identity {name:?} to {} (use --tls-dir {})",
                cert.display(),
                out.display()
            );
            Ok(())
        }
        None => {
            // clap requires both without a subcommand.
            let out = args
                .out
                .context("missing --out (the directory to write the certificates into)")?;
            let nodes: Vec<(crate::types::NodeId, String)> = args
                .nodes
                .iter()
                .map(|node| (node.id, node.addr.clone()))
                .collect();
            certs::generate(&out, &nodes)
                .with_context(|| format!("cannot write certificates to {}", out.display()))?;
            eprintln!(
                "wrote a cluster CA, {} node certificate(s) with a bundle node-ID/ each, a client and an admin identity to {}",
                nodes.len(),
                out.display()
            );
            Ok(())
        }
    }
}

/// Times `serve` restarts a node that stopped on storage damage it found
/// while running (each restart cuts the log and repairs it from peers).
const DAMAGE_RESTARTS_MAX: usize = 8;

/// `raftlog serve`: runs one node until SIGTERM/SIGINT, then stops it cleanly.
async fn serve(config: crate::server::config::ServerConfig) -> anyhow::Result<()> {
    use crate::server::{driver::DriverError, ServerError};
    let id = config.id;
    let mut restarts = 0;
    // Registered before the node starts, so a SIGHUP never finds the
    // default action (which would end the process).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let stop = dev::wait_for_stop_signal();
    tokio::pin!(stop);
    loop {
        let mut node = crate::server::Node::start(config.clone())
            .await
            .with_context(|| format!("cannot start node {id}"))?;
        let stopped = loop {
            tokio::select! {
                _ = hangup.recv() => match node.reload_tls() {
                    Ok(()) => tracing::info!(id, tls_dir = %config.tls_dir.display(), "SIGHUP: reloaded the TLS files; new connections use them"),
                    Err(error) => tracing::error!(id, tls_dir = %config.tls_dir.display(), %error, "SIGHUP: the TLS files do not load; keeping the ones in use"),
                },
                stopped = node.wait() => break Some(stopped),
                signal = &mut stop => {
                    signal?;
                    break None;
                }
            }
        };
        match stopped {
            Some(Err(ServerError::Driver(DriverError::Damaged { index, .. })))
                if restarts < DAMAGE_RESTARTS_MAX =>
            {
                // The damage is in the repair marker: a restart cuts
                // the log there and the node repairs from its peers.
                restarts += 1;
                tracing::warn!(id, index, "restarting to repair storage damage");
                node.abort();
                continue;
            }
            Some(stopped) => {
                stopped.with_context(|| format!("node {id} stopped"))?;
                anyhow::bail!("node {id} stopped unexpectedly");
            }
            None => {}
        }
        tracing::info!(id, "stopping");
        return node
            .shutdown()
            .await
            .with_context(|| format!("node {id} did not stop cleanly"));
    }
}
