//! The address of a child: what the registry maps an id to. It owns the
//! mailbox, so it outlives every instance that serves it: messages that wait
//! while an instance restarts, reloads or hibernates go to the next
//! instance.

use super::control::{Control, ControlSlot};
use super::deadline;
use super::mailbox::{Envelope, Mailbox, Refused};
use crate::trace;
use crate::types::{CallError, ChildSpec, ExitReason, Status};
use crate::wasm::{Info, Version};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// A watcher's incarnation that wants a `down` when this child exits.
pub(crate) struct Monitor {
    watcher: Weak<Cell>,
    generation: u64,
    reference: u64,
    /// A watcher on another node of the cluster instead (then `watcher`
    /// is empty).
    remote: Option<RemoteWatcher>,
}

/// A monitor set from another node: its node, its key there, and how to
/// tell it the exit reason.
pub(crate) struct RemoteWatcher {
    pub node: Arc<str>,
    pub key: u64,
    pub tell: Box<dyn FnOnce(ExitReason) + Send + Sync>,
}

/// One end of a link between an incarnation of this child and one of
/// `partner`.
pub(crate) struct Link {
    partner: Weak<Cell>,
    partner_generation: u64,
    generation: u64,
    /// A partner on another node of the cluster instead (then `partner`
    /// is empty).
    remote: Option<RemoteLink>,
}

/// This end of a link with a child on another node.
pub(crate) struct RemoteLink {
    /// The link's key: the node that made it and its number there.
    pub key: (Arc<str>, u64),
    /// The partner's id.
    pub partner: Arc<str>,
    /// Tells the partner's node how this end ended: the exit reason
    /// (`normal` for an unlink, or an end without an exit signal).
    pub tell: Box<dyn FnOnce(ExitReason) + Send + Sync>,
}

/// The mutable, rarely read part of a child: what `ps` shows.
pub(crate) struct CellState {
    pub status: Status,
    pub version: Option<Arc<Version>>,
    pub restarts: u64,
    pub last_exit: Option<ExitReason>,
    pub started_at: SystemTime,
    pub backoff_until: Option<SystemTime>,
    pub monitors: Vec<Monitor>,
    pub links: Vec<Link>,
    /// Brought back from the state database at host start.
    pub restored: bool,
    /// Started through the dynamic supervisor (not from the config).
    pub dynamic: bool,
    /// Whether `init` ever ran (a lazy child's first message runs it).
    pub activated: bool,
    /// The supervision group it belongs to, if any.
    pub group: Option<Arc<str>>,
}

/// A child's address: the registry entry that survives restarts.
pub struct Cell {
    pub(crate) id: Arc<str>,
    pub(crate) spec: ChildSpec,
    pub(crate) mailbox: Mailbox,
    pub(crate) control: ControlSlot,
    /// When the child last took a message, in ms of the host's clock: the
    /// least recently used idle child is the one a full pool hibernates.
    pub(crate) last_active: AtomicU64,
    /// Bytes of linear memory of its instance (0 without one), as of its
    /// last callback.
    pub(crate) memory: AtomicU64,
    /// The current (or last) incarnation.
    generation: AtomicU64,
    /// The last reference handed out (timers, monitors, replies, requests).
    ids: AtomicU64,
    /// Whether the current incarnation traps exit signals.
    pub(crate) trap_exits: AtomicBool,
    state: Mutex<CellState>,
}

impl Cell {
    /// A child whose mailbox takes at most `bound` messages from callers.
    pub(crate) fn new(spec: ChildSpec, bound: u32) -> Cell {
        Cell {
            id: spec.id.as_str().into(),
            spec,
            mailbox: Mailbox::new(bound),
            control: ControlSlot::default(),
            last_active: AtomicU64::new(0),
            memory: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            trap_exits: AtomicBool::new(false),
            state: Mutex::new(CellState {
                status: Status::Starting,
                version: None,
                restarts: 0,
                last_exit: None,
                started_at: SystemTime::now(),
                backoff_until: None,
                monitors: Vec::new(),
                links: Vec::new(),
                restored: false,
                dynamic: false,
                activated: false,
                group: None,
            }),
        }
    }

    /// The registry id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends the child a supervision signal; it wakes a hibernated child.
    pub(crate) fn signal(&self, control: Control) {
        self.control.push(control);
        self.mailbox.rouse();
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, CellState> {
        // Every critical section is a few assignments; a panic inside one
        // cannot leave the state half-written in a way that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current (or last) incarnation. A start begins a new one;
    /// timers, monitors, links and subscriptions belong to one.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Begins a new incarnation: its number. It traps no exits yet.
    pub(crate) fn next_generation(&self) -> u64 {
        self.trap_exits.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Goes back to incarnation `generation` (trapping exits or not), whose
    /// instance goes on after a reload whose new instance did not start.
    pub(crate) fn resume_generation(&self, generation: u64, trapping: bool) {
        self.generation.store(generation, Ordering::Release);
        self.trap_exits.store(trapping, Ordering::Release);
    }

    /// References are unique per child, across its incarnations, so a
    /// stale timer, monitor or reply can never pass for a live one.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends a request and waits for the reply, at most `timeout`; a late
    /// reply is dropped.
    pub async fn call(&self, msg: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let (reply, answer) = oneshot::channel();
        self.post(Envelope::Call {
            msg,
            reply,
            sent: Instant::now(),
            parent: trace::sender(),
        })?;
        // Cells are heap allocations of a few hundred bytes: the address
        // above its low bits spreads callees over the shards.
        let shard = (self as *const Cell as usize) >> 8;
        match deadline::within(answer, timeout, shard).await {
            Some(Ok(answer)) => answer,
            Some(Err(_)) => Err(CallError::Failed(
                "the child was stopped before it handled the message".into(),
            )),
            None => Err(CallError::Timeout),
        }
    }

    /// Queues a message that expects no reply.
    pub fn cast(&self, msg: Vec<u8>) -> Result<(), CallError> {
        self.post(Envelope::Cast {
            msg,
            sent: Instant::now(),
            parent: trace::sender(),
        })
    }

    fn post(&self, envelope: Envelope) -> Result<(), CallError> {
        self.mailbox.try_send(envelope).map_err(|e| match e {
            Refused::Full => CallError::MailboxFull,
            Refused::Closed => CallError::NotFound,
        })
    }

    /// Queues a runtime notification. Notifications are never dropped for a
    /// full mailbox.
    pub(crate) fn post_info(&self, generation: u64, info: Info) {
        self.mailbox
            .send_notification(Envelope::Info { generation, info });
    }

    /// Adds a monitor for `watcher`'s incarnation `generation`, or answers
    /// at once with `noproc` when no instance is running. Both happen under
    /// the state lock, so a monitor set while the child exits is never
    /// missed.
    pub(crate) fn monitor(&self, watcher: &Arc<Cell>, generation: u64, reference: u64) {
        let mut state = self.state();
        if is_alive(state.status) {
            state.monitors.push(Monitor {
                watcher: Arc::downgrade(watcher),
                generation,
                reference,
                remote: None,
            });
        } else {
            drop(state);
            watcher.post_info(
                generation,
                Info::Down {
                    reference,
                    id: self.id.clone(),
                    reason: ExitReason::Noproc,
                },
            );
        }
    }

    /// Adds a monitor for a watcher on another node; `false` (and no
    /// monitor) when no instance is running: the watcher gets `noproc`.
    pub(crate) fn monitor_remote(&self, watcher: RemoteWatcher) -> bool {
        let mut state = self.state();
        if !is_alive(state.status) {
            return false;
        }
        state.monitors.push(Monitor {
            watcher: Weak::new(),
            generation: 0,
            reference: 0,
            remote: Some(watcher),
        });
        true
    }

    /// Removes the monitor that node `node` set under `key`.
    pub(crate) fn demonitor_remote(&self, node: &str, key: u64) {
        self.state().monitors.retain(|m| {
            m.remote
                .as_ref()
                .is_none_or(|r| !(r.key == key && &*r.node == node))
        });
    }

    /// Takes out the monitor that node `node` set under `key`, if it is
    /// still set.
    pub(crate) fn take_remote_monitor(&self, node: &str, key: u64) -> Option<RemoteWatcher> {
        let mut state = self.state();
        let at = state.monitors.iter().position(|m| {
            m.remote
                .as_ref()
                .is_some_and(|r| r.key == key && &*r.node == node)
        })?;
        state.monitors.swap_remove(at).remote
    }

    /// Removes `watcher`'s monitor `reference`; whether it was still set.
    pub(crate) fn demonitor(&self, watcher: &Cell, reference: u64) -> bool {
        let mut state = self.state();
        let before = state.monitors.len();
        state.monitors.retain(|m| {
            m.remote.is_some()
                || !(m.reference == reference && std::ptr::eq(m.watcher.as_ptr(), watcher))
        });
        state.monitors.len() != before
    }

    /// Links this child's incarnation `generation` with `partner`'s current
    /// one, both ways; `not_found` when the partner is not running.
    pub(crate) fn link(
        self: &Arc<Cell>,
        generation: u64,
        partner: &Arc<Cell>,
    ) -> Result<(), CallError> {
        let partner_generation = {
            let mut theirs = partner.state();
            if !is_alive(theirs.status) {
                return Err(CallError::NotFound);
            }
            let partner_generation = partner.generation();
            let known = theirs.links.iter().any(|l| {
                l.generation == partner_generation
                    && l.partner_generation == generation
                    && std::ptr::eq(l.partner.as_ptr(), Arc::as_ptr(self))
            });
            if known {
                return Ok(());
            }
            theirs.links.push(Link {
                partner: Arc::downgrade(self),
                partner_generation: generation,
                generation: partner_generation,
                remote: None,
            });
            partner_generation
        };
        self.state().links.push(Link {
            partner: Arc::downgrade(partner),
            partner_generation,
            generation,
            remote: None,
        });
        Ok(())
    }

    /// Links incarnation `generation` (the current one when `None`) with a
    /// child on another node; the incarnation linked, or `None` (and no
    /// link) when it is not the one running.
    pub(crate) fn link_remote(&self, generation: Option<u64>, link: RemoteLink) -> Option<u64> {
        let mut state = self.state();
        let current = self.generation();
        if !is_alive(state.status) || generation.is_some_and(|g| g != current) {
            return None;
        }
        state.links.push(Link {
            partner: Weak::new(),
            partner_generation: 0,
            generation: current,
            remote: Some(link),
        });
        Some(current)
    }

    /// Removes the link with a child on another node that has `key`,
    /// without telling that node (it told this one); the incarnation it
    /// belonged to.
    pub(crate) fn forget_remote_link(&self, key: &(Arc<str>, u64)) -> Option<u64> {
        let mut state = self.state();
        let at = state
            .links
            .iter()
            .position(|l| l.remote.as_ref().is_some_and(|r| r.key == *key))?;
        Some(state.links.swap_remove(at).generation)
    }

    /// Removes incarnation `generation`'s links with `partner` on another
    /// node, telling that node (an `unlink`).
    pub(crate) fn unlink_remote(&self, generation: u64, partner: &str) {
        let gone: Vec<Link> = {
            let mut state = self.state();
            let (gone, kept) = std::mem::take(&mut state.links).into_iter().partition(|l| {
                l.generation == generation
                    && l.remote.as_ref().is_some_and(|r| &*r.partner == partner)
            });
            state.links = kept;
            gone
        };
        for link in gone.into_iter().filter_map(|l| l.remote) {
            (link.tell)(ExitReason::Normal);
        }
    }

    /// Removes the links of this child's incarnation `generation` with
    /// `partner` (every link when `partner` is `None`), both ways, with no
    /// exit signal: an `unlink`, or an incarnation that ends without an
    /// exit (a reload that starts the child anew).
    pub(crate) fn unlink(&self, generation: u64, partner: Option<&Cell>) {
        let gone = {
            let mut state = self.state();
            let (gone, kept) = std::mem::take(&mut state.links).into_iter().partition(|l| {
                l.generation == generation
                    && match partner {
                        None => true,
                        Some(p) => l.remote.is_none() && std::ptr::eq(l.partner.as_ptr(), p),
                    }
            });
            state.links = kept;
            gone
        };
        for link in gone {
            if let Some(remote) = link.remote {
                (remote.tell)(ExitReason::Normal);
                continue;
            }
            if let Some(partner) = link.partner.upgrade() {
                partner.forget_link(link.partner_generation, self, generation);
            }
        }
    }

    /// Removes this child's link of incarnation `generation` with
    /// `partner`'s incarnation `partner_generation`.
    fn forget_link(&self, generation: u64, partner: &Cell, partner_generation: u64) {
        self.state().links.retain(|l| {
            !(l.generation == generation
                && l.partner_generation == partner_generation
                && std::ptr::eq(l.partner.as_ptr(), partner))
        });
    }

    /// Records an exit of the current incarnation: sets the new status,
    /// sends `down` to every monitor (atomically with respect to
    /// [`Cell::monitor`]), and an exit signal to every linked child unless
    /// the exit is `normal`.
    pub(crate) fn exited(&self, reason: &ExitReason, status: Status) {
        let generation = self.generation();
        let (monitors, links) = {
            let mut state = self.state();
            state.status = status;
            state.last_exit = Some(reason.clone());
            let (links, kept) = std::mem::take(&mut state.links)
                .into_iter()
                .partition(|l| l.generation == generation);
            state.links = kept;
            (std::mem::take(&mut state.monitors), links)
        };
        for m in monitors {
            if let Some(remote) = m.remote {
                (remote.tell)(reason.clone());
            } else if let Some(watcher) = m.watcher.upgrade() {
                watcher.post_info(
                    m.generation,
                    Info::Down {
                        reference: m.reference,
                        id: self.id.clone(),
                        reason: reason.clone(),
                    },
                );
            }
        }
        for link in links {
            if let Some(remote) = link.remote {
                (remote.tell)(reason.clone());
                continue;
            }
            let Some(partner) = link.partner.upgrade() else {
                continue;
            };
            partner.forget_link(link.partner_generation, self, generation);
            if *reason != ExitReason::Normal && partner.generation() == link.partner_generation {
                partner.signal(Control::Exit {
                    from: self.id.clone(),
                    reason: reason.clone(),
                    generation: link.partner_generation,
                });
            }
        }
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.state().status = status;
    }
}

/// Whether a child with this status has an instance, is getting its first,
/// or hibernates (any message wakes it): the ones that can be monitored and
/// linked.
fn is_alive(status: Status) -> bool {
    matches!(
        status,
        Status::Running | Status::Starting | Status::Hibernated
    )
}

/// A handle to a child that stays valid across its restarts, like a name
/// registered with `{:via, Registry, ...}`.
#[derive(Clone)]
pub struct Address(pub(crate) Arc<Cell>);

impl Address {
    /// The child's id.
    pub fn id(&self) -> &str {
        self.0.id()
    }

    /// Sends a request and waits for the reply, at most `timeout`.
    pub async fn call(&self, msg: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.0.call(msg, timeout).await
    }

    /// Queues a message that expects no reply.
    pub fn cast(&self, msg: Vec<u8>) -> Result<(), CallError> {
        self.0.cast(msg)
    }

    /// Whether two addresses name the same child (the same start, not only
    /// the same id).
    pub fn same(&self, other: &Address) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({})", self.0.id)
    }
}
