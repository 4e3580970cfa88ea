//! The `raftlog` binary: all of it lives in `raftlog::cli`.

fn main() -> std::process::ExitCode {
    raftlog::cli::main()
}
