//! Network partitions between loopback addresses, with iptables.
//!
//! QUIC is UDP, so a partition is `-s A -d B -p udp -j DROP` (one rule per
//! direction) in a chain of our own that INPUT and OUTPUT jump to. The chain
//! is named after the test process (`RAFTLOG_FAULTS_<pid>`), so suites that
//! run at once do not flush each other's rules, and a chain whose process
//! is gone (a crashed run) is removed at the next start. Dropping the
//! [`Firewall`] removes the jumps and the chain, also on panic.

use std::process::Command;

pub const CHAIN_PREFIX: &str = "RAFTLOG_FAULTS_";

pub struct Firewall {
    chain: String,
}

fn iptables(args: &[&str]) -> Result<String, String> {
    // -w: wait for the xtables lock instead of failing when another
    // iptables call (another suite, the system) holds it.
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run iptables: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Removes chain `chain` and every jump to it from INPUT and OUTPUT.
fn remove_chain(chain: &str) {
    for builtin in ["INPUT", "OUTPUT"] {
        // A jump may be there more than once after repeated crashes; bounded.
        for _ in 0..16 {
            if iptables(&["-D", builtin, "-j", chain]).is_err() {
                break;
            }
        }
    }
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

/// Chains left by test processes that no longer exist.
fn remove_leftovers() -> Result<(), String> {
    let rules = iptables(&["-S"])?;
    for line in rules.lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = chain.strip_prefix(CHAIN_PREFIX) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            eprintln!("[faults] removing iptables chain {chain} left by a previous run");
            remove_chain(chain);
        }
    }
    Ok(())
}

impl Firewall {
    /// Sets up the chain, or says why partitions cannot be made here.
    pub fn install() -> Result<Firewall, String> {
        remove_leftovers()?;
        let chain = format!("{CHAIN_PREFIX}{}", std::process::id());
        remove_chain(&chain);
        iptables(&["-N", &chain])?;
        let firewall = Firewall { chain };
        iptables(&["-I", "INPUT", "-j", &firewall.chain])?;
        iptables(&["-I", "OUTPUT", "-j", &firewall.chain])?;
        Ok(firewall)
    }

    /// Drops UDP from `from` to `to` (one direction).
    pub fn drop_one_way(&self, from: &str, to: &str) -> Result<(), String> {
        iptables(&[
            "-A",
            &self.chain,
            "-s",
            from,
            "-d",
            to,
            "-p",
            "udp",
            "-j",
            "DROP",
        ])
        .map(|_| ())
    }

    /// Drops UDP between `a` and `b`, both ways.
    pub fn drop_both_ways(&self, a: &str, b: &str) -> Result<(), String> {
        self.drop_one_way(a, b)?;
        self.drop_one_way(b, a)
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&self) -> Result<(), String> {
        iptables(&["-F", &self.chain]).map(|_| ())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}
