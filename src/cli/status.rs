//! `raftlog status` and `raftlog admin`: the cluster as the leader sees it.

use serde_json::{json, Value};

use super::args::{AdminAction, AdminArgs, OutputFormat, StatusArgs};
use crate::client::{self, AdminRequest, ClusterStatus};
use crate::types::Membership;

/// The status JSON of the CLI contract.
pub fn status_json(status: &ClusterStatus) -> Value {
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|node| {
            json!({
                "id": node.id,
                "addr": node.addr,
                "role": node.role.as_str(),
                "match_index": node.match_index,
                "reachable": node.reachable,
                "repairing": node.repairing,
            })
        })
        .collect();
    json!({
        "leader": status.leader,
        "term": status.term,
        "commit_index": status.commit_index,
        "log_start": status.log_start,
        "last_index": status.last_index,
        "nodes": nodes,
    })
}

pub fn status_text(status: &ClusterStatus) -> String {
    let leader = status
        .leader
        .map_or_else(|| "none".to_string(), |id| id.to_string());
    let mut text = format!(
        "leader {leader}, term {}, commit index {}, log {}..{}\n",
        status.term, status.commit_index, status.log_start, status.last_index
    );
    text.push_str(&format!(
        "{:>4}  {:<22} {:<10} {:>12}  {}\n",
        "id", "addr", "role", "match", "reachable"
    ));
    for node in &status.nodes {
        let match_index = node
            .match_index
            .map_or_else(|| "-".to_string(), |index| index.to_string());
        let mut reachable = if node.reachable { "yes" } else { "no" }.to_string();
        if node.repairing {
            reachable.push_str(" (repairing)");
        }
        text.push_str(&format!(
            "{:>4}  {:<22} {:<10} {:>12}  {}\n",
            node.id,
            node.addr,
            node.role.as_str(),
            match_index,
            reachable
        ));
    }
    text
}

pub async fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let status = client::status(&super::client_config(&args.cluster)).await?;
    match args.output {
        OutputFormat::Json => println!("{}", status_json(&status)),
        OutputFormat::Text => print!("{}", status_text(&status)),
    }
    // The view is printed either way (it says which nodes answered), but a
    // cluster without a leader takes no writes: probes and scripts read
    // that from the exit code (CLI.md).
    if status.leader.is_none() {
        anyhow::bail!("{}", no_leader_reason(&status));
    }
    Ok(())
}

/// The `error:` line of a status without a leader.
pub fn no_leader_reason(status: &ClusterStatus) -> String {
    format!(
        "no leader known: the cluster answered in term {} without one (an election is under way, or too few nodes run for a majority)",
        status.term
    )
}

pub fn membership_text(membership: &Membership) -> String {
    let mut text = String::new();
    for (id, addr) in &membership.addrs {
        let role = if membership.voters.contains(id) {
            "voter"
        } else if membership.voters_outgoing.contains(id) {
            "voter (leaving)"
        } else {
            "learner"
        };
        text.push_str(&format!("{id} {addr} {role}\n"));
    }
    text
}

pub async fn run_admin(args: AdminArgs) -> anyhow::Result<()> {
    let (request, cluster) = match args.action {
        AdminAction::AddNode { node, cluster } => (
            AdminRequest::AddNode {
                id: node.id,
                addr: node.addr,
            },
            cluster,
        ),
        AdminAction::RemoveNode { id, cluster } => (AdminRequest::RemoveNode { id }, cluster),
        AdminAction::TransferLeader { id, cluster } => {
            (AdminRequest::TransferLeader { id }, cluster)
        }
    };
    let membership = client::admin(&super::client_config(&cluster), request).await?;
    print!("{}", membership_text(&membership));
    Ok(())
}
