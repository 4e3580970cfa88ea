//! The `raftlog` command line. See README.md and the CLI contract.

fn main() {
    eprintln!("error: raftlog is under construction; no subcommand is available yet");
    std::process::exit(2);
}
