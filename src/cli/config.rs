//! `serve` settings: the optional TOML file, then the flags on top of it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::args::{
    ByteSize, FsyncPolicy, HumanDuration, LogFormat, MillisRange, NodeAddr, ServeArgs,
};
use crate::server::config::{self as defaults, ConfigError, Fsync, ServerConfig};
use crate::types::NodeId;

/// The config file: the same settings as the flags, `_` in place of `-`.
/// An unknown key is an error that names it (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub id: Option<NodeId>,
    pub listen: Option<String>,
    /// `["2=10.0.0.2:7000", ...]`, as the `--peer` flag.
    pub peer: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub tls_dir: Option<PathBuf>,
    pub election_timeout_ms: Option<MillisRange>,
    pub heartbeat_ms: Option<u64>,
    pub fsync: Option<FsyncPolicy>,
    /// A byte count, or text with a unit (`"64MiB"`), as the flags take.
    pub segment_bytes: Option<ByteSize>,
    pub retention_bytes: Option<ByteSize>,
    pub retention_ms: Option<u64>,
    /// `"7d"`; excludes `retention_ms`.
    pub retention: Option<HumanDuration>,
    /// Accepted for compatibility; client certificates are required unless
    /// `allow_anonymous_clients` is set.
    pub require_client_cert: Option<bool>,
    pub allow_anonymous_clients: Option<bool>,
    pub join: Option<bool>,
    pub max_record_bytes: Option<ByteSize>,
    pub producer_expiry_ms: Option<u64>,
    pub metrics_listen: Option<String>,
    /// Read before the rest, when logging starts (see `cli::log_format`).
    pub log_format: Option<LogFormat>,
}

pub fn load_file(path: &Path) -> anyhow::Result<ServeFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "config file {}: {}",
            path.display(),
            error.message().replace('\n', " ")
        )
    })
}

pub fn resolve_addr(option: &'static str, text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .map_err(|error| ConfigError::Invalid {
            option,
            reason: format!("cannot resolve `{text}`: {error}"),
        })?
        .next()
        .ok_or_else(|| {
            ConfigError::Invalid {
                option,
                reason: format!("`{text}` resolves to no address"),
            }
            .into()
        })
}

/// Flags win over the file; the file wins over the defaults.
pub fn serve_config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => ServeFile::default(),
    };
    let id = args.id.or(file.id).ok_or(ConfigError::Missing("id"))?;
    let listen_text = args
        .listen
        .or(file.listen)
        .ok_or(ConfigError::Missing("listen"))?;
    let listen = resolve_addr("listen", &listen_text)?;
    let mut peer_list = args.peers;
    if peer_list.is_empty() {
        for text in file.peer.unwrap_or_default() {
            let peer: NodeAddr = text.parse().map_err(|reason| ConfigError::Invalid {
                option: "peer",
                reason,
            })?;
            peer_list.push(peer);
        }
    }
    let mut peers = BTreeMap::new();
    for peer in peer_list {
        if let Some(previous) = peers.insert(peer.id, peer.addr.clone()) {
            if previous != peer.addr {
                return Err(ConfigError::Invalid {
                    option: "peer",
                    reason: format!(
                        "node {} is listed twice ({previous} and {})",
                        peer.id, peer.addr
                    ),
                }
                .into());
            }
        }
    }
    let timeouts = args.election_timeout_ms.or(file.election_timeout_ms);
    let fsync = match args.fsync.or(file.fsync).unwrap_or_default() {
        FsyncPolicy::Always => Fsync::Always,
        FsyncPolicy::Never => Fsync::Never,
    };
    let metrics_listen = match args.metrics_listen.or(file.metrics_listen) {
        Some(text) => Some(resolve_addr("metrics-listen", &text)?),
        None => None,
    };
    // `--require-client-cert` is the default now; asking for it and for
    // anonymous clients at once is a contradiction worth refusing.
    let require_client_cert = args.require_client_cert || file.require_client_cert == Some(true);
    let allow_anonymous_clients =
        args.allow_anonymous_clients || file.allow_anonymous_clients.unwrap_or(false);
    if require_client_cert && allow_anonymous_clients {
        return Err(ConfigError::Invalid {
            option: "allow-anonymous-clients",
            reason: "contradicts --require-client-cert (which is the default)".into(),
        }
        .into());
    }
    if file.retention.is_some() && file.retention_ms.is_some() {
        return Err(ConfigError::Invalid {
            option: "retention",
            reason: "the config file sets both retention and retention_ms; keep one".into(),
        }
        .into());
    }
    // A flag (either spelling) wins over the file (either spelling).
    let retention = match (args.retention, args.retention_ms) {
        (Some(age), _) => Some(age.0),
        (None, Some(ms)) => Some(Duration::from_millis(ms)),
        (None, None) => file
            .retention
            .map(|age| age.0)
            .or(file.retention_ms.map(Duration::from_millis)),
    };
    let config = ServerConfig {
        id,
        listen,
        peers,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .ok_or(ConfigError::Missing("data-dir"))?,
        tls_dir: args
            .tls_dir
            .or(file.tls_dir)
            .ok_or(ConfigError::Missing("tls-dir"))?,
        election_timeout_min: timeouts
            .map(|range| Duration::from_millis(range.min_ms))
            .unwrap_or(defaults::ELECTION_TIMEOUT_MIN_DEFAULT),
        election_timeout_max: timeouts
            .map(|range| Duration::from_millis(range.max_ms))
            .unwrap_or(defaults::ELECTION_TIMEOUT_MAX_DEFAULT),
        heartbeat_interval: args
            .heartbeat_ms
            .or(file.heartbeat_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults::HEARTBEAT_INTERVAL_DEFAULT),
        fsync,
        segment_bytes: args
            .segment_bytes
            .or(file.segment_bytes)
            .map_or(defaults::SEGMENT_BYTES_DEFAULT, |size| size.0),
        retention_bytes: args
            .retention_bytes
            .or(file.retention_bytes)
            .map(|size| size.0),
        retention,
        allow_anonymous_clients,
        join: args.join || file.join.unwrap_or(false),
        record_bytes_max: args
            .max_record_bytes
            .or(file.max_record_bytes)
            .map_or(defaults::RECORD_BYTES_MAX_DEFAULT, |size| size.0),
        producer_expiry: args
            .producer_expiry_ms
            .or(file.producer_expiry_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults::PRODUCER_EXPIRY_DEFAULT),
        metrics_listen,
    };
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["raftlog", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn config_file_unknown_key_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 1\nlisten = \"127.0.0.1:7001\"\nfsink = \"never\"\n",
        )
        .unwrap();
        let error = load_file(&path).unwrap_err().to_string();
        assert!(error.contains("fsink"), "{error}");
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/d\"\ntls_dir = \"/t\"\n\
             peer = [\"2=127.0.0.1:7002\"]\nheartbeat_ms = 40\nfsync = \"never\"\n\
             election_timeout_ms = \"200..400\"\n",
        )
        .unwrap();
        let config = serve_config(serve_args(&[
            "--config",
            path.to_str().unwrap(),
            "--heartbeat-ms",
            "30",
        ]))
        .unwrap();
        assert_eq!(config.id, 1);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(30));
        assert_eq!(config.fsync, Fsync::Never);
        assert_eq!(config.election_timeout_min, Duration::from_millis(200));
        assert_eq!(
            config.peers.get(&2).map(String::as_str),
            Some("127.0.0.1:7002")
        );
    }

    const BASE: [&str; 8] = [
        "--id",
        "1",
        "--listen",
        "127.0.0.1:1",
        "--data-dir",
        "/d",
        "--tls-dir",
        "/t",
    ];

    #[test]
    fn sizes_and_retention_take_units_in_flags_and_in_the_file() {
        let mut flags = BASE.to_vec();
        flags.extend([
            "--segment-bytes",
            "8MiB",
            "--retention-bytes",
            "10GiB",
            "--max-record-bytes",
            "4096",
            "--retention",
            "7d",
        ]);
        let config = serve_config(serve_args(&flags)).unwrap();
        assert_eq!(config.segment_bytes, 8 << 20);
        assert_eq!(config.retention_bytes, Some(10 << 30));
        assert_eq!(config.record_bytes_max, 4096);
        assert_eq!(config.retention, Some(Duration::from_secs(7 * 24 * 3600)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "segment_bytes = \"1MiB\"\nretention_bytes = 1000000\nmax_record_bytes = \"64KiB\"\nretention = \"12h\"\n",
        )
        .unwrap();
        let mut from_file = BASE.to_vec();
        let path_text = path.display().to_string();
        from_file.extend(["--config", &path_text]);
        let config = serve_config(serve_args(&from_file)).unwrap();
        assert_eq!(config.segment_bytes, 1 << 20);
        assert_eq!(config.retention_bytes, Some(1_000_000));
        assert_eq!(config.record_bytes_max, 64 << 10);
        assert_eq!(config.retention, Some(Duration::from_secs(12 * 3600)));
        // The flag, in its other spelling, still wins over the file.
        from_file.extend(["--retention-ms", "1000"]);
        let config = serve_config(serve_args(&from_file)).unwrap();
        assert_eq!(config.retention, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_bad_unit_is_a_clear_error() {
        let mut flags = vec!["raftlog", "serve"];
        flags.extend(BASE);
        flags.extend(["--segment-bytes", "64M"]);
        let error = Cli::try_parse_from(&flags).unwrap_err().to_string();
        assert!(error.contains("unknown size unit `M`"), "{error}");
        let mut both = vec!["raftlog", "serve"];
        both.extend(BASE);
        both.extend(["--retention", "1d", "--retention-ms", "5"]);
        assert!(
            Cli::try_parse_from(&both).is_err(),
            "the two spellings conflict"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "retention = \"7\"\n").unwrap();
        let error = load_file(&path).unwrap_err().to_string();
        assert!(error.contains("needs a unit"), "{error}");
        std::fs::write(&path, "retention = \"7d\"\nretention_ms = 5\n").unwrap();
        let mut from_file = BASE.to_vec();
        let path_text = path.display().to_string();
        from_file.extend(["--config", &path_text]);
        let error = serve_config(serve_args(&from_file))
            .unwrap_err()
            .to_string();
        assert!(error.contains("retention_ms"), "{error}");
    }

    #[test]
    fn serve_without_an_id_names_the_missing_option() {
        let error = serve_config(serve_args(&["--listen", "127.0.0.1:1"])).unwrap_err();
        assert!(error.to_string().contains("--id"), "{error}");
    }

    #[test]
    fn heartbeat_must_be_below_the_election_timeout() {
        let error = serve_config(serve_args(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "/d",
            "--tls-dir",
            "/t",
            "--heartbeat-ms",
            "500",
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("heartbeat"), "{error}");
    }

    /// Issue 12: client certificates are required by default;
    /// `--allow-anonymous-clients` opts out, `--require-client-cert` is
    /// accepted and changes nothing, and asking for both is refused.
    #[test]
    fn client_certificates_are_required_unless_anonymous_clients_are_allowed() {
        let base = [
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "/d",
            "--tls-dir",
            "/t",
        ];
        let config = serve_config(serve_args(&base)).unwrap();
        assert!(!config.allow_anonymous_clients);
        let mut required = base.to_vec();
        required.push("--require-client-cert");
        assert!(
            !serve_config(serve_args(&required))
                .unwrap()
                .allow_anonymous_clients
        );
        let mut open = base.to_vec();
        open.push("--allow-anonymous-clients");
        assert!(
            serve_config(serve_args(&open))
                .unwrap()
                .allow_anonymous_clients
        );
        let mut both = required.clone();
        both.push("--allow-anonymous-clients");
        let mut argv = vec!["raftlog", "serve"];
        argv.extend_from_slice(&both);
        assert!(Cli::try_parse_from(argv).is_err(), "the two flags conflict");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "require_client_cert = true\nallow_anonymous_clients = true\n",
        )
        .unwrap();
        let mut from_file = base.to_vec();
        let path_text = path.display().to_string();
        from_file.extend(["--config", &path_text]);
        let error = serve_config(serve_args(&from_file)).unwrap_err();
        assert!(
            error.to_string().contains("allow-anonymous-clients"),
            "{error}"
        );
    }
}
