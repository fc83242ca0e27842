//! Supervision groups (OTP's static supervisors): the children and nested
//! groups of a `[[groups]]` entry, started in order and stopped in reverse
//! order. A member that exits waits, held, for its group to decide; the
//! group applies its strategy and counts restarts against its own intensity.
//! A group that exceeds it stops its members and escalates to its parent; a
//! top-level group's parent is the root, which never takes the host down: it
//! restarts the group after a backoff, or leaves it `failed`
//! (`[supervisor] on_exhausted`).

use super::Supervisor;
use super::intensity::{Intensity, Verdict, backoff_delay};
use super::policy::wants_restart;
use super::port::GuestPort;
use crate::child::{Cell, Control, Decision, Parent};
use crate::config::{GroupConfig, OnExhausted, Strategy};
use crate::events::Event;
use crate::types::{ExitReason, Status};
use crate::wasm::Port;
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a group hears from its members, its parent and the host.
pub(crate) enum GroupMsg {
    /// Member `index` exited in its incarnation `epoch` and waits, held.
    Exited { index: usize, epoch: u64 },
    /// Member `index` is gone for good (a temporary exit, an operator stop).
    Removed { index: usize },
    /// Stop every member, in reverse order, and stay down showing `status`.
    Hold {
        status: Status,
        done: oneshot::Sender<()>,
    },
    /// Start every member, in order, with a fresh intensity.
    Release { done: oneshot::Sender<()> },
    /// The host stops (or, with `noconnection`, its node lost its cluster
    /// lease): stop every member for good, in reverse order.
    Shutdown {
        done: oneshot::Sender<()>,
        reason: ExitReason,
    },
    /// What the group looks like now, for the supervision tree.
    Describe { reply: oneshot::Sender<GroupTree> },
}

/// A supervision group in the tree: its strategy, its restart intensity
/// and how much of it is used, and its members in start order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupTree {
    /// The group's id.
    pub id: String,
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    pub strategy: Strategy,
    /// Restarts allowed within `max_seconds`.
    pub max_restarts: u32,
    /// The intensity window, seconds.
    pub max_seconds: u32,
    /// Restarts within the window now.
    pub restarts: usize,
    /// Whether it stopped its members after exceeding its intensity.
    pub down: bool,
    /// Its children and nested groups, in start order.
    pub members: Vec<TreeMember>,
}

/// A member of a group: a child or a nested group.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TreeMember {
    /// A child.
    Child(TreeChild),
    /// A nested group.
    Group(GroupTree),
}

/// A child in the tree.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TreeChild {
    /// The registry id.
    pub id: String,
    /// The plugin.
    pub plugin: String,
    /// Its status.
    pub status: Status,
    /// Restarts so far.
    pub restarts: u64,
}

impl TreeChild {
    pub(crate) fn of(cell: &Cell) -> TreeChild {
        let state = cell.state();
        TreeChild {
            id: cell.id.to_string(),
            plugin: cell.spec.plugin.clone(),
            status: state.status,
            restarts: state.restarts,
        }
    }
}

/// How a member reaches its group.
#[derive(Clone)]
pub(crate) struct GroupLink {
    tx: mpsc::UnboundedSender<GroupMsg>,
    index: usize,
    /// The group's id (shown by `ps`).
    pub(crate) group: Arc<str>,
}

impl GroupLink {
    /// This member exited (in incarnation `epoch`) and waits for an order.
    fn exited(&self, epoch: u64) {
        let _ = self.tx.send(GroupMsg::Exited {
            index: self.index,
            epoch,
        });
    }

    /// This member is gone for good.
    fn removed(&self) {
        let _ = self.tx.send(GroupMsg::Removed { index: self.index });
    }
}

/// The parent of a group's child member: its group decides its restarts.
struct MemberParent {
    sup: Arc<Supervisor>,
    link: GroupLink,
}

impl Parent for MemberParent {
    fn port(&self, cell: &Arc<Cell>, generation: u64) -> Box<dyn Port> {
        GuestPort::boxed(&self.sup, cell, generation)
    }

    fn exited(&mut self, cell: &Cell, reason: &ExitReason, _uptime: Duration) -> Decision {
        if !wants_restart(cell.spec.restart, reason) {
            return Decision::Remove;
        }
        self.link.exited(cell.generation());
        Decision::Hold
    }

    fn revived(&mut self, _cell: &Cell, _was_failed: bool) {}

    fn window(&self) -> Duration {
        Duration::from_secs(self.sup.config.supervisor.max_seconds.into())
    }

    fn removed(&self, cell: &Arc<Cell>) -> BoxFuture<'static, ()> {
        self.sup.registry.remove(cell);
        self.link.removed();
        Box::pin(std::future::ready(()))
    }
}

/// A group as its parent (or the host) sees it.
#[derive(Clone)]
pub(crate) struct GroupHandle {
    tx: mpsc::UnboundedSender<GroupMsg>,
    /// Bumped at every release, so that an escalation from an earlier
    /// incarnation of the group is recognised as stale.
    epoch: Arc<AtomicU64>,
}

impl GroupHandle {
    async fn ask(&self, msg: impl FnOnce(oneshot::Sender<()>) -> GroupMsg) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(msg(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Stops the group's members for good, in reverse order.
    pub(crate) async fn shutdown(&self) {
        self.shutdown_with(ExitReason::Shutdown).await;
    }

    /// Stops the group's members for good, in reverse order, with
    /// `reason` (`shutdown`, or `noconnection`: at once, no `terminate`).
    pub(crate) async fn shutdown_with(&self, reason: ExitReason) {
        self.ask(|done| GroupMsg::Shutdown { done, reason }).await;
    }

    /// The group as it is now; `None` once it stopped.
    pub(crate) fn describe(&self) -> BoxFuture<'static, Option<GroupTree>> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (reply, tree) = oneshot::channel();
            tx.send(GroupMsg::Describe { reply }).ok()?;
            tree.await.ok()
        })
    }
}

enum Member {
    Child(Arc<Cell>),
    Group(GroupHandle),
    Gone,
}

impl Member {
    fn epoch(&self) -> Option<u64> {
        match self {
            Member::Child(cell) => Some(cell.generation()),
            Member::Group(g) => Some(g.epoch.load(Ordering::Acquire)),
            Member::Gone => None,
        }
    }

    async fn hold(&self, status: Status) {
        match self {
            Member::Child(cell) => {
                let (done, held) = oneshot::channel();
                cell.signal(Control::Hold { status, done });
                let _ = held.await;
            }
            Member::Group(g) => g.ask(|done| GroupMsg::Hold { status, done }).await,
            Member::Gone => {}
        }
    }

    async fn release(&self) {
        match self {
            Member::Child(cell) => {
                let (done, tried) = oneshot::channel();
                cell.signal(Control::Release { done });
                let _ = tried.await;
            }
            Member::Group(g) => g.ask(|done| GroupMsg::Release { done }).await,
            Member::Gone => {}
        }
    }

    async fn stop(&self, reason: &ExitReason) {
        match self {
            Member::Child(cell) => {
                let (done, stopped) = oneshot::channel();
                cell.signal(Control::Stop {
                    done,
                    reason: reason.clone(),
                    // A lost lease: the member leaves this node only.
                    keep: *reason == ExitReason::NoConnection,
                });
                let _ = stopped.await;
            }
            Member::Group(g) => g.shutdown_with(reason.clone()).await,
            Member::Gone => {}
        }
    }
}

/// Where a group escalates to.
enum Above {
    Group(GroupLink),
    Root,
}

struct Group {
    sup: Arc<Supervisor>,
    id: Arc<str>,
    strategy: Strategy,
    intensity: Intensity,
    members: Vec<Member>,
    parent: Above,
    epoch: Arc<AtomicU64>,
    /// This group's own sender, for the root's delayed restart.
    tx: mpsc::UnboundedSender<GroupMsg>,
    rx: mpsc::UnboundedReceiver<GroupMsg>,
    /// Down after exceeding its intensity (its members are held).
    down: bool,
    /// Consecutive escalations to the root, for its backoff.
    escalations: u32,
    released_at: Instant,
}

/// Starts a top-level group and its members, in order; returns once every
/// member's first start was tried.
pub(super) async fn start_top(sup: &Arc<Supervisor>, config: &GroupConfig) -> GroupHandle {
    start(sup.clone(), config.clone(), Above::Root).await
}

fn start(
    sup: Arc<Supervisor>,
    config: GroupConfig,
    parent: Above,
) -> BoxFuture<'static, GroupHandle> {
    Box::pin(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let id: Arc<str> = config.id.as_str().into();
        let s = sup.config.supervisor;
        let mut members = Vec::new();
        tracing::info!(group = %id, "starting group ({:?})", config.strategy);
        for child in &config.children {
            let link = GroupLink {
                tx: tx.clone(),
                index: members.len(),
                group: id.clone(),
            };
            let parent = Box::new(MemberParent {
                sup: sup.clone(),
                link,
            });
            let started = sup
                .start_config_child(child, parent, Some(id.clone()))
                .await;
            members.push(match started {
                Some(cell) => Member::Child(cell),
                None => Member::Gone,
            });
        }
        for nested in config.groups {
            let link = GroupLink {
                tx: tx.clone(),
                index: members.len(),
                group: id.clone(),
            };
            members.push(Member::Group(
                start(sup.clone(), nested, Above::Group(link)).await,
            ));
        }
        let epoch = Arc::new(AtomicU64::new(0));
        let handle = GroupHandle {
            tx: tx.clone(),
            epoch: epoch.clone(),
        };
        let group = Group {
            sup: sup.clone(),
            id,
            strategy: config.strategy,
            intensity: Intensity::new(
                config.max_restarts.unwrap_or(s.max_restarts),
                config.max_seconds.unwrap_or(s.max_seconds),
            ),
            members,
            parent,
            epoch,
            tx,
            rx,
            down: false,
            escalations: 0,
            released_at: Instant::now(),
        };
        let running = sup.env.tasks.enter();
        tokio::spawn(async move {
            group.run().await;
            drop(running);
        });
        handle
    })
}

impl Group {
    async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            match msg {
                GroupMsg::Exited { index, epoch } => self.exited(index, epoch).await,
                GroupMsg::Removed { index } => {
                    if let Some(m) = self.members.get_mut(index) {
                        *m = Member::Gone;
                    }
                }
                GroupMsg::Hold { status, done } => {
                    self.hold_from(0, status).await;
                    self.down = true;
                    let _ = done.send(());
                }
                GroupMsg::Release { done } => {
                    self.release_all().await;
                    let _ = done.send(());
                }
                GroupMsg::Describe { reply } => {
                    let _ = reply.send(self.describe().await);
                }
                GroupMsg::Shutdown { done, reason } => {
                    for m in self.members.iter().rev() {
                        m.stop(&reason).await;
                    }
                    tracing::info!(group = %self.id, "group stopped");
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Member `index` exited: apply the strategy within intensity, or stop
    /// and escalate.
    async fn exited(&mut self, index: usize, epoch: u64) {
        // A member restarted since (by a sibling's restart, say) already
        // got what this exit would ask for.
        if self.down || self.members.get(index).and_then(Member::epoch) != Some(epoch) {
            return;
        }
        match self.intensity.record(Instant::now(), Duration::ZERO) {
            Verdict::Within => {}
            Verdict::Exceeded(_) => return self.escalate().await,
        }
        let member = &self.members[index];
        match self.strategy {
            Strategy::OneForOne => member.release().await,
            Strategy::OneForAll => {
                self.hold_from(0, Status::Restarting).await;
                self.release_from(0).await;
            }
            Strategy::RestForOne => {
                self.hold_from(index + 1, Status::Restarting).await;
                self.release_from(index).await;
            }
        }
    }

    async fn describe(&self) -> GroupTree {
        let mut members = Vec::with_capacity(self.members.len());
        for m in &self.members {
            match m {
                Member::Child(cell) => members.push(TreeMember::Child(TreeChild::of(cell))),
                Member::Group(g) => {
                    if let Some(tree) = g.describe().await {
                        members.push(TreeMember::Group(tree));
                    }
                }
                Member::Gone => {}
            }
        }
        GroupTree {
            id: self.id.to_string(),
            strategy: self.strategy,
            max_restarts: self.intensity.max_restarts(),
            max_seconds: self.intensity.window().as_secs() as u32,
            restarts: self.intensity.used(Instant::now()),
            down: self.down,
            members,
        }
    }

    /// Stops members `from..` in reverse order (the one that exited is down
    /// already, and a held member just acknowledges).
    async fn hold_from(&self, from: usize, status: Status) {
        for m in self.members[from.min(self.members.len())..].iter().rev() {
            m.hold(status).await;
        }
    }

    /// Starts members `from..` in order, each after the previous one's start
    /// was tried.
    async fn release_from(&self, from: usize) {
        for m in &self.members[from.min(self.members.len())..] {
            m.release().await;
        }
    }

    async fn release_all(&mut self) {
        self.intensity.reset();
        self.down = false;
        self.released_at = Instant::now();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.release_from(0).await;
    }

    /// Too many restarts: stop every member (reverse order) and let the
    /// parent decide.
    async fn escalate(&mut self) {
        self.down = true;
        let window = Duration::from_secs(self.sup.config.supervisor.max_seconds.into());
        if self.released_at.elapsed() > window.saturating_mul(2) {
            self.escalations = 0;
        }
        self.escalations = self.escalations.saturating_add(1);
        let to = match &self.parent {
            Above::Group(link) => Some(link.group.to_string()),
            Above::Root => None,
        };
        tracing::warn!(
            group = %self.id,
            "restart intensity exceeded; stopping the group and escalating to {}",
            to.as_deref().unwrap_or("the root")
        );
        let status = match (&self.parent, self.sup.config.supervisor.on_exhausted) {
            (Above::Group(_), _) => Status::Restarting,
            (Above::Root, OnExhausted::Backoff) => Status::Backoff,
            (Above::Root, OnExhausted::Fail) => Status::Failed,
        };
        self.hold_from(0, status).await;
        let delay_ms = match status {
            Status::Backoff => Some(backoff_delay(self.escalations).as_millis() as u64),
            _ => None,
        };
        self.sup.env.events.emit(Event::GroupEscalated {
            id: self.id.to_string(),
            to: to.clone(),
            delay_ms,
        });
        match &self.parent {
            Above::Group(link) => link.exited(self.epoch.load(Ordering::Acquire)),
            Above::Root => {
                if let Some(ms) = delay_ms {
                    // The root restarts the group later; meanwhile the group
                    // still answers its members and the host.
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let (done, _) = oneshot::channel();
                        let _ = tx.send(GroupMsg::Release { done });
                    });
                } else {
                    tracing::error!(group = %self.id, "group failed; restart one of its children to revive it");
                }
            }
        }
    }
}
