//! The nodes one client talks to: a QUIC connection per node, dialled in
//! parallel and reused by every request, and the search for the leader.
//!
//! Why parallel: a node that is down answers nothing, so dialling addresses
//! in turn waits out a handshake timeout on each dead one before trying the
//! next. The pool dials every known address at once, serves a request from
//! whichever connection is up, and redials a lost node in the background
//! with a jittered backoff. A connection that stops hearing from its node
//! closes within [`crate::net::transport::CLIENT_IDLE_TIMEOUT`] (about an
//! election timeout), and the pool marks it down.
//!
//! Finding the leader asks every connected node for its status at once and
//! takes the first that answers as leader; followers' redirects only add
//! addresses to ask. A redirect to a leader that just died therefore costs
//! nothing: the others are asked again every few milliseconds until one of
//! them has won the election.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connection::{self, NodeConnection, Tls};
use super::{ClientConfig, ClientError, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN};
use crate::net::{self, ClientEndpoints, NetError};
use crate::wire::client::{ClientRequest, ClientResponse, ErrorResponse};

/// Pause between two status questions to one node while no leader is
/// known: short next to an election (150-300 ms), so the new leader is
/// found within a few milliseconds of winning, yet a 3-node cluster sees
/// only a few hundred tiny requests per second from a searching client.
const LEADER_POLL_MIN: Duration = Duration::from_millis(10);
const LEADER_POLL_MAX: Duration = Duration::from_millis(25);
/// A status question unanswered for this long is asked again (the node may
/// have died; its connection closes on its own soon after).
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// A connection that lasted this long was healthy: its loss is redialled at
/// once and clears the dial backoff.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(1);
/// Addresses a pool learns from redirects beyond the configured ones: a
/// misbehaving node cannot make a client dial without bound.
const LEARNED_ADDRESSES_MAX: usize = 64;

/// A handle on the pool; clones share the connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    tls: Tls,
    endpoints: ClientEndpoints,
    slots: Mutex<Vec<Slot>>,
    /// Bumped on every change of a slot, so waiters recheck.
    changed: watch::Sender<u64>,
}

struct Slot {
    addr: String,
    state: SlotState,
    /// Failed dials in a row, for the backoff.
    failures: u32,
    /// Identifies one dial, so a stale dial's result is dropped.
    generation: u64,
}

enum SlotState {
    Idle,
    Dialing,
    Up {
        connection: quinn::Connection,
        since: Instant,
    },
    Down {
        retry_at: Instant,
        error: String,
    },
    /// The address cannot work (it does not parse or resolve to nothing):
    /// never dialled again.
    Bad(String),
}

/// What one node said when asked for the leader.
enum Probe {
    Leader(NodeConnection),
    Redirect(Option<String>),
    /// An answer no retry changes (permission denied): the search ends.
    Refused(ErrorResponse),
    Failed,
}

impl Pool {
    /// A pool over `config.cluster`; dialling starts at once.
    pub fn new(config: ClientConfig, tls: Tls) -> Result<Pool, ClientError> {
        if config.cluster.is_empty() {
            return Err(ClientError::BadAddress {
                addr: String::new(),
                reason: "no cluster address given".to_string(),
            });
        }
        let slots = config
            .cluster
            .iter()
            .map(|addr| Slot {
                addr: addr.clone(),
                state: SlotState::Idle,
                failures: 0,
                generation: 0,
            })
            .collect();
        let pool = Pool {
            inner: Arc::new(Inner {
                config,
                tls,
                endpoints: ClientEndpoints::default(),
                slots: Mutex::new(slots),
                changed: watch::channel(0).0,
            }),
        };
        pool.dial_due();
        Ok(pool)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // Slots are plain data updated in whole statements; a panic while
        // holding the lock cannot leave one half-written.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|version| *version += 1);
    }

    /// Starts a dial for every slot that is idle, or down with its retry due.
    fn dial_due(&self) {
        let now = Instant::now();
        let mut to_dial = Vec::new();
        {
            let mut slots = self.slots();
            for (position, slot) in slots.iter_mut().enumerate() {
                let due = match &slot.state {
                    SlotState::Idle => true,
                    SlotState::Down { retry_at, .. } => *retry_at <= now,
                    _ => false,
                };
                if due {
                    slot.state = SlotState::Dialing;
                    slot.generation += 1;
                    to_dial.push((position, slot.generation, slot.addr.clone()));
                }
            }
        }
        for (position, generation, addr) in to_dial {
            let pool = self.clone();
            tokio::spawn(async move {
                let result =
                    net::connect_client_from(&pool.inner.endpoints, &addr, &pool.inner.tls.0).await;
                pool.dialled(position, generation, result);
            });
        }
    }

    fn dialled(
        &self,
        position: usize,
        generation: u64,
        result: Result<quinn::Connection, NetError>,
    ) {
        {
            let mut slots = self.slots();
            let Some(slot) = slots.get_mut(position) else {
                return;
            };
            if slot.generation != generation {
                return;
            }
            match result {
                Ok(connection) => {
                    slot.state = SlotState::Up {
                        connection: connection.clone(),
                        since: Instant::now(),
                    };
                    let pool = self.clone();
                    tokio::spawn(async move {
                        let reason = connection.closed().await;
                        pool.lost(position, generation, reason.to_string());
                    });
                }
                Err(error @ NetError::InvalidAddress { .. }) => {
                    slot.state = SlotState::Bad(error.to_string());
                }
                Err(error) => {
                    slot.failures = slot.failures.saturating_add(1);
                    slot.state = SlotState::Down {
                        retry_at: Instant::now() + backoff(slot.failures),
                        error: error.to_string(),
                    };
                }
            }
        }
        self.bump();
    }

    /// The connection of slot `position` (dial `generation`) closed.
    fn lost(&self, position: usize, generation: u64, error: String) {
        {
            let mut slots = self.slots();
            let Some(slot) = slots.get_mut(position) else {
                return;
            };
            let SlotState::Up { since, .. } = slot.state else {
                return;
            };
            if slot.generation != generation {
                return;
            }
            // A connection that worked for a while is redialled at once (the
            // node may have restarted, or only this connection timed out);
            // one the node closes right after the handshake (it refused our
            // certificate) backs off like a failed dial.
            if since.elapsed() >= HEALTHY_CONNECTION {
                slot.failures = 0;
            }
            slot.state = SlotState::Down {
                retry_at: Instant::now() + backoff(slot.failures),
                error,
            };
            slot.failures = slot.failures.saturating_add(1);
        }
        self.bump();
    }

    /// Marks `node`'s connection as failed (a request on it timed out), so
    /// the next request uses another node and this one is redialled.
    pub fn forget(&self, node: &NodeConnection) {
        node.connection
            .close(net::close_code::NORMAL, b"the client gave up waiting");
    }

    /// The connections that are up now, with their slot positions.
    fn up(&self) -> Vec<(usize, NodeConnection)> {
        self.slots()
            .iter()
            .enumerate()
            .filter_map(|(position, slot)| match &slot.state {
                SlotState::Up { connection, .. } if connection.close_reason().is_none() => Some((
                    position,
                    NodeConnection {
                        addr: slot.addr.clone(),
                        connection: connection.clone(),
                    },
                )),
                _ => None,
            })
            .collect()
    }

    /// Why no node can be used: `Some` once every address is down or bad.
    fn all_failed(&self) -> Option<ClientError> {
        let slots = self.slots();
        let mut last_error = String::new();
        let mut bad = 0;
        for slot in slots.iter() {
            match &slot.state {
                SlotState::Down { error, .. } => last_error = error.clone(),
                SlotState::Bad(error) => {
                    bad += 1;
                    last_error = error.clone();
                }
                _ => return None,
            }
        }
        if bad == slots.len() {
            if let Some(slot) = slots.first() {
                return Some(ClientError::BadAddress {
                    addr: slot.addr.clone(),
                    reason: last_error,
                });
            }
        }
        Some(ClientError::Unreachable {
            addrs: slots
                .iter()
                .map(|slot| slot.addr.as_str())
                .collect::<Vec<_>>()
                .join(","),
            last_error,
        })
    }

    /// When the next down slot may be redialled.
    fn next_retry(&self) -> Option<Instant> {
        self.slots()
            .iter()
            .filter_map(|slot| match &slot.state {
                SlotState::Down { retry_at, .. } => Some(*retry_at),
                _ => None,
            })
            .min()
    }

    /// Waits until something changes in the pool, a redial is due, or `deadline`.
    async fn wait_change(&self, seen: &mut watch::Receiver<u64>, deadline: Instant) {
        let wake = self
            .next_retry()
            .map_or(deadline, |retry| retry.min(deadline));
        let _ = tokio::time::timeout_at(wake.into(), seen.changed()).await;
    }

    /// A connection to some node, preferring one other than `avoid`; waits
    /// for the dials under way. Fails once every address failed since the
    /// call began, or at `deadline`.
    pub async fn any(
        &self,
        avoid: Option<&str>,
        deadline: Instant,
    ) -> Result<NodeConnection, ClientError> {
        let mut seen = self.inner.changed.subscribe();
        let mut attempts_seen = false;
        loop {
            self.dial_due();
            seen.borrow_and_update();
            let up = self.up();
            if let Some((_, node)) = up
                .iter()
                .find(|(_, node)| Some(node.addr.as_str()) != avoid)
                .or(up.first())
            {
                return Ok(node.clone());
            }
            if let Some(error) = self.all_failed() {
                // The first pass may find slots down from before this call:
                // they were just redialled by `dial_due` unless still backing off.
                if attempts_seen || matches!(error, ClientError::BadAddress { .. }) {
                    return Err(error);
                }
            }
            attempts_seen = true;
            if Instant::now() >= deadline {
                return Err(self
                    .all_failed()
                    .unwrap_or(ClientError::Timeout(self.inner.config.request_timeout)));
            }
            self.wait_change(&mut seen, deadline).await;
        }
    }

    /// Adds `addr` (learned from a redirect) unless known; returns whether
    /// it is known now.
    fn learn(&self, addr: &str) -> bool {
        let mut slots = self.slots();
        if slots.iter().any(|slot| slot.addr == addr) {
            return true;
        }
        if slots.len() >= self.inner.config.cluster.len() + LEARNED_ADDRESSES_MAX {
            return false;
        }
        slots.push(Slot {
            addr: addr.to_string(),
            state: SlotState::Idle,
            failures: 0,
            generation: 0,
        });
        true
    }

    /// The node that says it is the leader: asks every connected node for
    /// its status, again and again, until one answers as leader or
    /// `deadline` passes. Redirects only add the address they name.
    pub async fn leader(&self, deadline: Instant) -> Result<NodeConnection, ClientError> {
        let mut seen = self.inner.changed.subscribe();
        let mut asking: JoinSet<(usize, Probe)> = JoinSet::new();
        // Slots with a question under way (or waiting to be asked again).
        let mut busy: Vec<usize> = Vec::new();
        let mut last_answer: Option<ErrorResponse> = None;
        loop {
            self.dial_due();
            seen.borrow_and_update();
            for (position, node) in self.up() {
                if !busy.contains(&position) {
                    busy.push(position);
                    let config = self.inner.config.clone();
                    asking.spawn(probe(config, position, node, Duration::ZERO));
                }
            }
            if asking.is_empty() {
                if let Some(error) = self.all_failed() {
                    if Instant::now() >= deadline || self.next_retry().is_none() {
                        return Err(error);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(match last_answer {
                    Some(answer) => ClientError::Refused(answer),
                    None => self.all_failed().unwrap_or(ClientError::Unreachable {
                        addrs: self.inner.config.cluster.join(","),
                        last_error: "no node answered as leader".to_string(),
                    }),
                });
            }
            let wake = self
                .next_retry()
                .map_or(deadline, |retry| retry.min(deadline));
            tokio::select! {
                Some(joined) = asking.join_next(), if !asking.is_empty() => {
                    let Ok((position, answer)) = joined else { continue };
                    match answer {
                        Probe::Leader(node) => return Ok(node),
                        Probe::Refused(error) => return Err(ClientError::Refused(error)),
                        Probe::Redirect(hint) => {
                            last_answer = Some(match &hint {
                                Some(addr) => ErrorResponse::NotLeader {
                                    leader_id: None,
                                    leader_addr: Some(addr.clone()),
                                },
                                None => ErrorResponse::Unavailable,
                            });
                            if let Some(addr) = hint {
                                self.learn(&addr);
                            }
                        }
                        Probe::Failed => {}
                    }
                    // Ask the same node again after a pause, while it is up.
                    match self.up().into_iter().find(|(up, _)| *up == position) {
                        Some((_, node)) => {
                            let pause = jittered(LEADER_POLL_MIN, LEADER_POLL_MAX);
                            let config = self.inner.config.clone();
                            asking.spawn(probe(config, position, node, pause));
                        }
                        None => busy.retain(|&busy_position| busy_position != position),
                    }
                }
                _ = seen.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

/// Asks one node for its status: a node that answers with a leader is it
/// (followers that know a leader redirect instead).
async fn probe(
    config: ClientConfig,
    position: usize,
    node: NodeConnection,
    pause: Duration,
) -> (usize, Probe) {
    tokio::time::sleep(pause).await;
    let config = ClientConfig {
        request_timeout: config.request_timeout.min(STATUS_TIMEOUT),
        ..config
    };
    let answer = match connection::round_trip(&config, &node, &ClientRequest::Status).await {
        Ok(ClientResponse::Status(status)) if status.leader.is_some() => Probe::Leader(node),
        Ok(ClientResponse::Error(ErrorResponse::NotLeader { leader_addr, .. })) => {
            Probe::Redirect(leader_addr)
        }
        Ok(ClientResponse::Error(error)) if !error.is_retryable() => Probe::Refused(error),
        Ok(_) => Probe::Redirect(None),
        Err(_) => Probe::Failed,
    };
    (position, answer)
}

/// The redial pause after `failures` failed dials in a row: the first
/// retry at once, then doubling from the minimum, jittered so that many
/// clients of a restarted node do not redial in step.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doubled = RECONNECT_BACKOFF_MIN.saturating_mul(1 << failures.min(8));
    let capped = doubled.min(RECONNECT_BACKOFF_MAX);
    jittered(capped / 2, capped)
}

/// A duration uniformly in `low..=high`.
pub(crate) fn jittered(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_micros() as u64;
    if span == 0 {
        return low;
    }
    low + Duration::from_micros(random_u64() % (span + 1))
}

/// A random u64 without a random crate: RandomState is seeded from the OS;
/// mixing in the clock and the pid makes two processes started at once
/// differ even if it were not.
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
