//! Cluster mode on NATS JetStream: the node's membership and the
//! cluster-wide claims on dynamic child ids.
//!
//! Two key-value buckets per cluster name:
//! - `NAME-nodes`: one key per live node, rewritten every `heartbeat_ms`;
//!   the bucket's `max_age` is `node_timeout_ms`, so the key of a node that
//!   stopped renewing it disappears, and a name is free again.
//! - `NAME-children`: one key per dynamic child id, created only if absent
//!   (JetStream's compare-and-set), holding the spec, the owner node and an
//!   epoch that grows with every change of owner. A second start of the id
//!   anywhere loses the create and answers `already_started`.
//!
//! Durable state lives in the cluster's store too (see [`state`]).

mod state;

use crate::config::ClusterConfig;
use crate::types::{Activate, ChildSpec, Restart, StartError};
use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a node writes into the nodes bucket with each heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NodeInfo {
    /// The node name.
    pub node: String,
    /// Its HTTP API address.
    pub api: Option<String>,
    /// When it joined (Unix ms, its clock).
    pub joined_at_ms: u64,
    /// Children it runs.
    pub children: usize,
    /// Its plugins and their current versions.
    pub plugins: BTreeMap<String, String>,
    /// The singleton config children it declares.
    #[serde(default)]
    pub singletons: Vec<String>,
    /// Whether it is being drained: it starts nothing, inherits nothing,
    /// and is home to no singleton.
    #[serde(default)]
    pub draining: bool,
}

/// A node as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStatus {
    /// What the node last wrote.
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Whether its heartbeat is younger than `node_timeout_ms`.
    pub alive: bool,
    /// How long ago its last heartbeat was written, ms, by the NATS
    /// server's clock against this node's.
    pub heartbeat_age_ms: u64,
    /// Whether it is the node that answered.
    pub this_node: bool,
}

/// The spec part of a claim, as the other nodes need it to run the child.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ClaimedSpec {
    plugin: String,
    /// The init args, as the UTF-8 JSON text they are.
    args: String,
    restart: Restart,
    shutdown_ms: u32,
    activate: Activate,
}

impl ClaimedSpec {
    fn of(spec: &ChildSpec) -> ClaimedSpec {
        ClaimedSpec {
            plugin: spec.plugin.clone(),
            args: String::from_utf8_lossy(&spec.args).into_owned(),
            restart: spec.restart,
            shutdown_ms: spec.shutdown_ms,
            activate: spec.activate,
        }
    }

    fn to_spec(&self, id: &str) -> ChildSpec {
        ChildSpec {
            id: id.to_string(),
            plugin: self.plugin.clone(),
            args: bytes::Bytes::from(self.args.clone().into_bytes()),
            restart: self.restart,
            shutdown_ms: self.shutdown_ms,
            activate: self.activate,
        }
    }
}

/// A claim on a child id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Claim {
    /// The node that runs the child.
    pub owner: String,
    /// Grows with every change of owner.
    pub epoch: u64,
    spec: ClaimedSpec,
    /// A singleton config child's claim: moved by the singleton rule, not
    /// re-homed as a dynamic child.
    #[serde(default)]
    singleton: bool,
}

/// A claim this node is to act on: a dead node's child it is the chosen
/// heir of, or one of its own that runs nowhere.
pub(crate) struct Orphan {
    pub spec: ChildSpec,
    claim: Claim,
    revision: u64,
}

/// What a restarting node does with a child it has stored.
#[derive(Debug, PartialEq)]
pub(crate) enum Adopt {
    /// It is this node's (or nobody's, and now this node's): restore it.
    Mine,
    /// Another node holds it now: forget it here.
    Elsewhere(String),
    /// Its claim was given up since (it moved, and was stopped there):
    /// forget it here.
    Released,
}

/// What one node asks of the node that runs a child.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// A call, with the time left for it.
    Call(Duration),
    Cast,
    Stop,
    Restart,
    Kill(String),
    /// The child's info, as JSON.
    Get,
    /// The node's own children after an id, at most a number, as a JSON
    /// array.
    List(Option<String>, usize),
    /// Start a dynamic child there (the message is its spec): a start
    /// placed on the least loaded node.
    Start,
    /// Take over the child the asking node (named) stopped for it, while
    /// draining.
    Adopt(String),
    /// Move every dynamic child elsewhere and start nothing more.
    Drain,
    /// Node (named) monitors the child under its key: tell it the exit.
    Monitor(String, u64),
    /// Node (named) removes its monitor of that key.
    Demonitor(String, u64),
    /// The child this node monitors under the key exited; the message is
    /// the reason (JSON).
    Down(u64),
    /// Link the child with a child of the asking node (named; the message
    /// is its id), under that node's key.
    Link(String, u64),
    /// The other end of the link with key (made by the named node, under
    /// its number) ended; the message is the reason (JSON).
    LinkExit(String, u64),
}

/// The spec of a start placed on another node, as [`Op::Start`] sends it.
pub(crate) fn encode_spec(spec: &ChildSpec) -> Vec<u8> {
    serde_json::to_vec(&ClaimedSpec::of(spec)).unwrap_or_default()
}

/// The spec [`encode_spec`] wrote, for child `id`.
pub(crate) fn decode_spec(id: &str, bytes: &[u8]) -> Option<ChildSpec> {
    serde_json::from_slice::<ClaimedSpec>(bytes)
        .ok()
        .map(|s| s.to_spec(id))
}

/// An answer from the node that runs the child: the reply's bytes, or an
/// error's code and message (the API's codes).
pub(crate) type Answer = Result<Vec<u8>, (String, String)>;

/// What this node does when another asks: the operation on a child of its
/// own (never routed on again).
pub(crate) trait Inbound: Send + Sync + 'static {
    fn handle(&self, op: Op, id: String, msg: Vec<u8>) -> BoxFuture<'static, Answer>;
}

/// How long a request other than a call may take end to end (a stop waits
/// for the child's `terminate`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a drain may take end to end: every child of the node is
/// stopped there and started elsewhere.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a read (a child's info, a node's page of children) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

const OP: &str = "wv-op";
const ID: &str = "wv-id";
const TIMEOUT_MS: &str = "wv-timeout-ms";
const REASON: &str = "wv-reason";
const ERROR: &str = "wv-error";
const TOPIC: &str = "wv-topic";
const AFTER: &str = "wv-after";
const LIMIT: &str = "wv-limit";
const ORIGIN: &str = "wv-origin";
const WATCH: &str = "wv-watch";
const INITIATOR: &str = "wv-initiator";

/// Publishes waiting to go out to the other nodes; past this, new ones are
/// dropped (and counted in the log) rather than held without bound.
const TOPIC_BACKLOG: usize = 65_536;

/// This node's membership in a cluster.
pub(crate) struct Cluster {
    client: async_nats::Client,
    /// This node's publishes, in order, to the task that sends them.
    outbox: tokio::sync::mpsc::Sender<(String, bytes::Bytes)>,
    outbox_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<(String, bytes::Bytes)>>>,
    node: String,
    name: String,
    config: ClusterConfig,
    children: kv::Store,
    nodes: kv::Store,
    joined_at_ms: u64,
    /// The singleton config children this node declares.
    singletons: Vec<String>,
    /// Set while the node cannot renew its heartbeat: its children were
    /// stopped, and it starts none.
    fenced: std::sync::atomic::AtomicBool,
    /// Set once the node is drained: it starts and inherits nothing.
    draining: std::sync::atomic::AtomicBool,
    /// The newest claim revision when the node was last fenced: its own
    /// claims up to it that run nowhere are restarted once it is back (0:
    /// none to look for).
    fenced_at: std::sync::atomic::AtomicU64,
    /// This node's copy of both buckets, kept by watching them.
    replica: Arc<Replica>,
    /// The token of each claim this node holds (the revision of the write
    /// that made it the owner), which fences its state writes.
    held: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Durable state.
    store: state::StateStore,
    /// Children taken over whose state entry could not be fenced yet: their
    /// state is fenced before it is read.
    unfenced: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The watching tasks.
    watchers: Vec<tokio::task::AbortHandle>,
    /// Other nodes' claims, as the watch sees them (see
    /// [`Cluster::claims_held_elsewhere`]).
    moved_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, u64)>>>,
}

/// What a node knows of the cluster, from watching its buckets: every
/// claim, and every member with when this node last saw its heartbeat
/// (by its own clock, so clocks need not agree).
#[derive(Default)]
struct Replica {
    claims: std::sync::Mutex<std::collections::HashMap<String, (Claim, u64)>>,
    members: std::sync::Mutex<BTreeMap<String, (NodeInfo, std::time::Instant)>>,
    /// When this node placed children on each node (`least_loaded`), for
    /// two heartbeats: a burst of starts within one heartbeat is spread,
    /// not all sent to the node that was emptiest before it. Kept past the
    /// heartbeat that may count them (it may have been sampled before they
    /// started): counting one twice for a while is the safer error. Taken
    /// after `members` when both are.
    placed: std::sync::Mutex<HashMap<String, Vec<std::time::Instant>>>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Follows `store` from its current contents on, handing each entry to
/// `apply`; a watch that ends (the connection dropped) is started again.
fn follow(
    store: kv::Store,
    apply: impl Fn(kv::Entry) + Send + 'static,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            match store.watch_with_history(">").await {
                Ok(mut watch) => {
                    while let Some(entry) = watch.next().await {
                        match entry {
                            Ok(entry) => apply(entry),
                            Err(e) => {
                                tracing::warn!("watching {}: {e}", store.name);
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot watch {}: {e}", store.name),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .abort_handle()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The live node that inherits `id`'s child: the highest hash of the id
/// and the node's name (rendezvous hashing), so every survivor agrees, and
/// a dead node's children spread over them.
fn heir<'a>(id: &str, live: &'a [String]) -> Option<&'a String> {
    // FNV-1a: fixed, so nodes of different builds agree.
    let hash = |node: &str| {
        let bytes = id.bytes().chain([0xff]).chain(node.bytes());
        bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    live.iter().max_by_key(|node| hash(node))
}

/// Credentials written into a NATS URL.
#[derive(Debug, PartialEq)]
enum UrlAuth {
    UserPassword(String, String),
    Token(String),
}

/// The credentials in `urls` (comma-separated servers; the first that has
/// any), and the URLs without them, to show in messages and logs.
fn url_auth(urls: &str) -> (Option<UrlAuth>, String) {
    let mut auth = None;
    let mut shown = Vec::new();
    for url in urls.split(',') {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let host_at = rest.find('/').unwrap_or(rest.len());
        let Some(at) = rest[..host_at].rfind('@') else {
            shown.push(url.to_string());
            continue;
        };
        let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
        if auth.is_none() {
            auth = Some(match userinfo.split_once(':') {
                Some((user, password)) => UrlAuth::UserPassword(user.into(), password.into()),
                None => UrlAuth::Token(userinfo.into()),
            });
        }
        shown.push(match scheme {
            "" => host.to_string(),
            scheme => format!("{scheme}://{host}"),
        });
    }
    (auth, shown.join(","))
}

/// The id of a key made by [`key`].
fn unkey(key: &str) -> String {
    let mut id = String::with_capacity(key.len());
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '=' => id.push(match chars.next() {
                Some('d') => '.',
                Some('c') => ':',
                _ => '@',
            }),
            c => id.push(c),
        }
    }
    id
}

/// A child id as a key: ids may hold `:` and `@`, which keys may not, and
/// `.`, which a key may not start or end with. `=` is in no id, so the
/// escape is reversible.
fn key(id: &str) -> String {
    let mut k = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '.' => k.push_str("=d"),
            ':' => k.push_str("=c"),
            '@' => k.push_str("=a"),
            c => k.push(c),
        }
    }
    k
}

impl Cluster {
    /// Connects to NATS, opens (or creates) the cluster's buckets and
    /// joins under the configured node name. A live node of that name (its
    /// heartbeat younger than `node_timeout_ms`) makes the join fail once
    /// that long has passed without the name coming free.
    pub(crate) async fn join(config: &ClusterConfig, singletons: Vec<String>) -> Result<Cluster> {
        let node = config
            .node
            .clone()
            .context("cluster mode needs a node name")?;
        // No retry of the first connect: a NATS that cannot be reached at
        // start is an error that names it, not a wait.
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("wasmvisor {node}"))
            .connection_timeout(Duration::from_secs(5));
        if let Some(creds) = &config.credentials {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("cannot read credentials {}", creds.display()))?;
        }
        // async-nats takes a URL's user and password, or token, from its
        // options, not from the URL; the URL is shown without them.
        let (auth, shown) = url_auth(&config.nats);
        options = match auth {
            Some(UrlAuth::UserPassword(user, password)) => {
                options.user_and_password(user, password)
            }
            Some(UrlAuth::Token(token)) => options.token(token),
            None => options,
        };
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            options.connect(config.nats.as_str()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer from NATS at {shown} within 10 s"))?
        .with_context(|| format!("cannot connect to NATS at {shown}"))?;
        let js = jetstream::new(client.clone());
        let timeout = Duration::from_millis(config.node_timeout_ms);
        let children = bucket(&js, format!("{}-children", config.name), Duration::ZERO).await?;
        let nodes = bucket(&js, format!("{}-nodes", config.name), timeout).await?;
        let store = state::StateStore::open(&js, &config.name).await?;
        let (outbox, outbox_rx) = tokio::sync::mpsc::channel(TOPIC_BACKLOG);
        let (moved_tx, moved_rx) = tokio::sync::mpsc::unbounded_channel();
        let replica = Arc::new(Replica::default());
        let claims = replica.clone();
        let members = replica.clone();
        let placed = replica.clone();
        let counted = Duration::from_millis(config.heartbeat_ms.saturating_mul(2));
        let me = node.clone();
        let watchers = vec![
            follow(children.clone(), move |e| {
                let mut claims = locked(&claims.claims);
                match e.operation {
                    kv::Operation::Put => {
                        if let Ok(claim) = serde_json::from_slice::<Claim>(&e.value) {
                            if claim.owner != me {
                                let _ = moved_tx.send((unkey(&e.key), e.revision));
                            }
                            claims.insert(e.key, (claim, e.revision));
                        }
                    }
                    _ => {
                        claims.remove(&e.key);
                    }
                }
            }),
            follow(nodes.clone(), move |e| {
                let mut members = locked(&members.members);
                match e.operation {
                    kv::Operation::Put => {
                        // Seen now, by this node's clock: the server's time
                        // of the write would need the clocks to agree. A
                        // node that died just before this one started is
                        // judged gone a timeout later than it could be,
                        // never earlier.
                        if let Ok(info) = serde_json::from_slice::<NodeInfo>(&e.value) {
                            if let Some(times) = locked(&placed.placed).get_mut(&info.node) {
                                times.retain(|t| t.elapsed() < counted);
                            }
                            members.insert(e.key, (info, std::time::Instant::now()));
                        }
                    }
                    _ => {
                        // A heartbeat's key is its node's name.
                        locked(&placed.placed).remove(&e.key);
                        members.remove(&e.key);
                    }
                }
            }),
        ];
        let cluster = Cluster {
            client,
            outbox,
            outbox_rx: std::sync::Mutex::new(Some(outbox_rx)),
            node,
            name: config.name.clone(),
            config: config.clone(),
            children,
            nodes,
            joined_at_ms: now_ms(),
            singletons,
            fenced: std::sync::atomic::AtomicBool::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            fenced_at: std::sync::atomic::AtomicU64::new(0),
            replica,
            held: Default::default(),
            store,
            unfenced: Default::default(),
            watchers,
            moved_rx: std::sync::Mutex::new(Some(moved_rx)),
        };
        cluster.claim_name().await?;
        tracing::info!(
            "joined cluster {} as node {} through {}",
            cluster.name,
            cluster.node,
            shown
        );
        Ok(cluster)
    }

    async fn claim_name(&self) -> Result<()> {
        let info = self.info(0, BTreeMap::new());
        let value = serde_json::to_vec(&info)?;
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms);
        // A node that just died keeps its name until its last heartbeat
        // ages out; a live one renews it, and the name stays taken.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.node_timeout_ms)
            + 2 * heartbeat;
        loop {
            match self.nodes.create(&self.node, value.clone().into()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if tokio::time::Instant::now() >= deadline {
                        anyhow::bail!(
                            "a node named {} is alive in cluster {}; give this one another --node",
                            self.node,
                            self.name
                        );
                    }
                    tokio::time::sleep(heartbeat).await;
                }
                Err(e) => return Err(e).context("cannot register the node in NATS"),
            }
        }
    }

    fn info(&self, children: usize, plugins: BTreeMap<String, String>) -> NodeInfo {
        NodeInfo {
            node: self.node.clone(),
            api: self.config.api.clone(),
            joined_at_ms: self.joined_at_ms,
            children,
            plugins,
            singletons: self.singletons.clone(),
            draining: self.draining(),
        }
    }

    /// Whether the node is being drained.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Drains the node from now on: it starts and inherits nothing, and
    /// the other nodes see so at its next heartbeat.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Writes the node's heartbeat every `heartbeat_ms` with what `sample`
    /// says, until the returned task is aborted. The heartbeat is the
    /// node's lease on its children: when no write succeeded for half of
    /// `node_timeout_ms`, `lost` runs (it stops the children) and the node
    /// is fenced, before any other node may take them over (at
    /// `node_timeout_ms`). The first write that succeeds again lifts the
    /// fence; the node's own claims that nobody took over meanwhile are
    /// then restarted here (see [`Cluster::orphans`]).
    pub(crate) fn heartbeat(
        self: &Arc<Self>,
        sample: impl Fn() -> (usize, BTreeMap<String, String>) + Send + Sync + 'static,
        lost: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let every = Duration::from_millis(me.config.heartbeat_ms);
        let lease = Duration::from_millis(me.config.node_timeout_ms) / 2;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut renewed = tokio::time::Instant::now();
            let mut renewed_wall = SystemTime::now();
            loop {
                tick.tick().await;
                // Counted from before the write: the server's copy is at
                // least that fresh.
                let attempt = tokio::time::Instant::now();
                let wall = SystemTime::now();
                // Checked before the write: a node that could not renew its
                // lease for that long (cut off, or its process paused, or
                // its machine asleep, which only the wall clock counts)
                // stops its children before a late write renews it, as
                // other nodes may have taken them over.
                let gap = attempt
                    .duration_since(renewed)
                    .max(wall.duration_since(renewed_wall).unwrap_or_default());
                if gap >= lease && !me.fenced.swap(true, Ordering::AcqRel) {
                    let newest = locked(&me.replica.claims)
                        .values()
                        .map(|(_, r)| *r)
                        .max()
                        .unwrap_or(0);
                    me.fenced_at.store(newest.max(1), Ordering::Release);
                    tracing::error!(
                        "no heartbeat renewed for {gap:?}: stopping this node's children before \
                         another node takes them over"
                    );
                    lost().await;
                }
                let (children, plugins) = sample();
                let Ok(value) = serde_json::to_vec(&me.info(children, plugins)) else {
                    continue;
                };
                let put = tokio::time::timeout(every, me.nodes.put(&me.node, value.into())).await;
                let renewed_now = match put {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        tracing::warn!("cannot write the node's heartbeat: {e}");
                        false
                    }
                    Err(_) => {
                        tracing::warn!("the node's heartbeat took longer than heartbeat_ms");
                        false
                    }
                };
                if renewed_now {
                    renewed = attempt;
                    renewed_wall = wall;
                    if me.fenced.swap(false, Ordering::AcqRel) {
                        tracing::warn!("the heartbeat is renewed: this node serves again");
                    }
                }
            }
        })
    }

    /// Whether the node lost its lease (and starts nothing).
    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// The claims this node is to act on now: children of nodes that are
    /// gone (no heartbeat for `node_timeout_ms`) whose heir, by rendezvous
    /// hashing over the live nodes, is this node; and, once after a lost
    /// lease, its own claims from before it on children it does not run
    /// (`runs` says which it does).
    pub(crate) fn orphans(&self, runs: impl Fn(&str) -> bool) -> Vec<Orphan> {
        let live = self.live();
        if !live.contains(&self.node) {
            return Vec::new();
        }
        let heirs = self.candidates();
        let claims: Vec<(String, Claim, u64)> = locked(&self.replica.claims)
            .iter()
            .map(|(k, (c, r))| (k.clone(), c.clone(), *r))
            .collect();
        // Own claims run nowhere only after a lost lease; a newer one may
        // be a start in progress. Looked for until none is left.
        let fenced_at = self.fenced_at.load(Ordering::Acquire);
        let mut out = Vec::new();
        for (k, claim, revision) in claims.into_iter().filter(|(_, c, _)| !c.singleton) {
            let id = unkey(&k);
            let act = match claim.owner == self.node {
                true => revision <= fenced_at && !runs(&id),
                false => !live.contains(&claim.owner) && heir(&id, &heirs) == Some(&self.node),
            };
            if act {
                out.push(Orphan {
                    spec: claim.spec.to_spec(&id),
                    claim,
                    revision,
                });
            }
        }
        if fenced_at != 0 && !out.iter().any(|o| o.claim.owner == self.node) {
            // Unless a newer lost lease set it again meanwhile.
            let _ =
                self.fenced_at
                    .compare_exchange(fenced_at, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        out
    }

    /// Takes `orphan` over: a compare-and-set on its claim's revision that
    /// makes this node the owner and raises the epoch. `false` when the
    /// claim changed meanwhile (another node took it, or it was removed),
    /// and for a `temporary` child, whose claim is removed instead (it is
    /// not restarted).
    pub(crate) async fn take_over(&self, orphan: &Orphan) -> Result<bool> {
        let key = key(&orphan.spec.id);
        if orphan.spec.restart == Restart::Temporary {
            // Not restarted: its claim goes, its state first.
            self.remove_state(&orphan.spec.id, orphan.revision).await;
            let _ = self
                .children
                .delete_expect_revision(&key, Some(orphan.revision))
                .await;
            return Ok(false);
        }
        if orphan.claim.owner == self.node {
            // Claimed again at the revision this node knew, so that a node
            // that takes it over at the same time (its copy as late as
            // this one's) cannot also win.
            return self
                .move_claim(&orphan.spec.id, &orphan.claim, orphan.revision)
                .await;
        }
        self.move_claim(&orphan.spec.id, &orphan.claim, orphan.revision)
            .await
    }

    /// Makes this node the owner of `id`'s `claim` (at `revision`) by a
    /// compare-and-set that raises the epoch, then fences the child's
    /// state. `false` when the claim changed meanwhile.
    async fn move_claim(&self, id: &str, claim: &Claim, revision: u64) -> Result<bool> {
        let moved = Claim {
            owner: self.node.clone(),
            epoch: claim.epoch + 1,
            spec: claim.spec.clone(),
            singleton: claim.singleton,
        };
        let value = serde_json::to_vec(&moved)?;
        let token = match self.children.update(key(id), value.into(), revision).await {
            Ok(token) => token,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(false),
            Err(e) => return Err(e).context("cannot take a claim over"),
        };
        self.hold(id, token);
        // Before the child runs here: the old owner's late state writes
        // are refused from now on, and the state is this node's to read.
        if let Err(e) = self.fence_state(id, token).await {
            // Done before its state is read (which fails until then).
            tracing::warn!(
                child = id,
                "cannot fence its state in the cluster's store yet: {e}"
            );
            locked(&self.unfenced).insert(id.to_string());
        }
        Ok(true)
    }

    /// Every node this node has seen a heartbeat of, by name (from the
    /// watched copy of the nodes bucket).
    pub(crate) fn nodes(&self) -> Vec<NodeStatus> {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        let members = locked(&self.replica.members);
        members
            .values()
            .map(|(info, seen)| NodeStatus {
                alive: seen.elapsed() < timeout,
                heartbeat_age_ms: seen.elapsed().as_millis() as u64,
                this_node: info.node == self.node,
                info: info.clone(),
            })
            .collect()
    }

    /// Claims `spec.id` for this node: `already_started` when any node
    /// holds it.
    pub(crate) async fn claim(&self, spec: &ChildSpec) -> Result<(), StartError> {
        self.claim_as(spec, false).await
    }

    async fn claim_as(&self, spec: &ChildSpec, singleton: bool) -> Result<(), StartError> {
        let claim = Claim {
            singleton,
            owner: self.node.clone(),
            epoch: 1,
            spec: ClaimedSpec::of(spec),
        };
        let value = serde_json::to_vec(&claim)
            .map_err(|e| StartError::Unavailable(format!("cannot encode the claim: {e}")))?;
        match self.children.create(key(&spec.id), value.into()).await {
            Ok(token) => {
                self.hold(&spec.id, token);
                Ok(())
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(StartError::AlreadyStarted(spec.id.clone()))
            }
            Err(e) => Err(StartError::Unavailable(format!(
                "cannot claim the id in the cluster: {e}"
            ))),
        }
    }

    /// The claim on `id`, if any node holds one.
    pub(crate) async fn claim_of(&self, id: &str) -> Result<Option<(Claim, u64)>> {
        let entry = self
            .children
            .entry(key(id))
            .await
            .context("cannot read the cluster registry")?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision))))
    }

    /// Gives up this node's claim on `id` (the child is gone), and its
    /// state; a claim another node holds is left alone.
    pub(crate) async fn release(&self, id: &str) {
        locked(&self.held).remove(id);
        locked(&self.unfenced).remove(id);
        match self.claim_of(id).await {
            Ok(Some((claim, revision))) if claim.owner == self.node => {
                // The state first: once the claim is gone, another node may
                // start the id and store a state of its own.
                self.remove_state(id, revision).await;
                if let Err(e) = self
                    .children
                    .delete_expect_revision(key(id), Some(revision))
                    .await
                {
                    tracing::warn!(child = id, "cannot release the id in the cluster: {e}")
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(child = id, "cannot release the id in the cluster: {e:#}"),
        }
    }

    /// What a restarting node does with a child it stored: keep it if the
    /// claim is its own or free (then it claims it again), forget it if
    /// another node holds it.
    pub(crate) async fn adopt(&self, spec: &ChildSpec) -> Result<Adopt> {
        loop {
            let last = self
                .children
                .entry(key(&spec.id))
                .await
                .context("cannot read the cluster registry")?;
            let Some(entry) = last else {
                match self.claim(spec).await {
                    Ok(()) => return Ok(Adopt::Mine),
                    // Claimed meanwhile: read again.
                    Err(StartError::AlreadyStarted(_)) => continue,
                    Err(e) => return Err(anyhow::anyhow!("{e}")),
                }
            };
            // A claim deleted since: the child was stopped (on the node it
            // had moved to); this node's record of it is out of date.
            if entry.operation != kv::Operation::Put {
                return Ok(Adopt::Released);
            }
            let claim: Claim =
                serde_json::from_slice(&entry.value).context("an unreadable claim")?;
            if claim.owner != self.node {
                return Ok(Adopt::Elsewhere(claim.owner));
            }
            // Its own: claimed again by a compare-and-set, so that a node
            // taking it over at the same time loses (or wins, and this one
            // forgets it).
            if self.move_claim(&spec.id, &claim, entry.revision).await? {
                return Ok(Adopt::Mine);
            }
        }
    }

    /// Claims again, by a compare-and-set raising the epoch, child `id`
    /// whose claim is this node's: `false` when it is not (any more).
    pub(crate) async fn reclaim(&self, id: &str) -> Result<bool> {
        match self.claim_of(id).await? {
            Some((claim, revision)) if claim.owner == self.node => {
                self.move_claim(id, &claim, revision).await
            }
            _ => Ok(false),
        }
    }

    /// Claims that another node holds now, as the watch sees them: a child
    /// of this node whose claim moved on (while this node could not tell)
    /// is stopped here.
    pub(crate) fn claims_held_elsewhere(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(String, u64)>> {
        locked(&self.moved_rx).take()
    }

    /// Whether child `id`'s claim, now at `revision` and another node's,
    /// moved on from the one this node holds (this node's copy of the
    /// child runs no more).
    pub(crate) fn moved_on(&self, id: &str, revision: u64) -> bool {
        self.token(id).is_some_and(|mine| mine < revision)
    }

    /// This node's name.
    pub(crate) fn node_name(&self) -> &str {
        &self.node
    }

    /// The subject a node takes requests on.
    fn subject(&self, node: &str) -> String {
        format!("{}.node.{node}", self.name)
    }

    /// Answers the other nodes' requests about this node's children with
    /// `inbound`, until the returned task is aborted. Casts and kills are
    /// handled in the order they came; the rest each in a task of its own.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        inbound: Arc<dyn Inbound>,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let mut requests = self
            .client
            .subscribe(self.subject(&self.node))
            .await
            .context("cannot take requests from the other nodes")?;
        let client = self.client.clone();
        Ok(tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(reply_to) = request.reply.clone() else {
                    continue;
                };
                let headers = request.headers.clone().unwrap_or_default();
                let header = |k: &str| headers.get(k).map(|v| v.as_str().to_string());
                let id = header(ID).unwrap_or_default();
                let op = match header(OP).as_deref() {
                    Some("call") => Op::Call(Duration::from_millis(
                        header(TIMEOUT_MS)
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(5_000),
                    )),
                    Some("cast") => Op::Cast,
                    Some("stop") => Op::Stop,
                    Some("restart") => Op::Restart,
                    Some("kill") => Op::Kill(header(REASON).unwrap_or_default()),
                    Some("get") => Op::Get,
                    Some("list") => Op::List(
                        header(AFTER),
                        header(LIMIT).and_then(|l| l.parse().ok()).unwrap_or(1000),
                    ),
                    Some("start") => Op::Start,
                    Some("adopt") => Op::Adopt(header(ORIGIN).unwrap_or_default()),
                    Some("drain") => Op::Drain,
                    Some("link") => match header(WATCH).and_then(|k| k.parse().ok()) {
                        Some(key) => Op::Link(header(ORIGIN).unwrap_or_default(), key),
                        None => continue,
                    },
                    Some("link-exit") => match header(WATCH).and_then(|k| k.parse().ok()) {
                        Some(key) => Op::LinkExit(header(INITIATOR).unwrap_or_default(), key),
                        None => continue,
                    },
                    Some(op @ ("monitor" | "demonitor" | "down")) => {
                        let Some(key) = header(WATCH).and_then(|k| k.parse().ok()) else {
                            continue;
                        };
                        let from = header(ORIGIN).unwrap_or_default();
                        match op {
                            "monitor" => Op::Monitor(from, key),
                            "demonitor" => Op::Demonitor(from, key),
                            _ => Op::Down(key),
                        }
                    }
                    _ => continue,
                };
                // Monitors and links too: a demonitor must not overtake its
                // monitor, nor a link's end its start. None of them waits.
                let in_order = matches!(
                    op,
                    Op::Cast
                        | Op::Kill(_)
                        | Op::Monitor(..)
                        | Op::Demonitor(..)
                        | Op::Down(_)
                        | Op::Link(..)
                        | Op::LinkExit(..)
                );
                let work = inbound.handle(op, id, request.payload.to_vec());
                let client = client.clone();
                let answer = async move {
                    let (headers, payload) = match work.await {
                        Ok(reply) => (async_nats::HeaderMap::new(), reply),
                        Err((code, message)) => {
                            let mut h = async_nats::HeaderMap::new();
                            h.insert(ERROR, code.as_str());
                            (h, message.into_bytes())
                        }
                    };
                    if let Err(e) = client
                        .publish_with_headers(reply_to, headers, payload.into())
                        .await
                    {
                        tracing::warn!("cannot answer another node: {e}");
                    }
                };
                match in_order {
                    true => answer.await,
                    false => drop(tokio::spawn(answer)),
                }
            }
        }))
    }

    /// Sends a publish of this node's to the other nodes (in the order of
    /// this node's publishes).
    pub(crate) fn broadcast(&self, topic: &str, msg: &bytes::Bytes) {
        if self
            .outbox
            .try_send((topic.to_string(), msg.clone()))
            .is_err()
        {
            tracing::warn!(
                topic,
                "a publish was not sent to the other nodes: {TOPIC_BACKLOG} are waiting for NATS"
            );
        }
    }

    /// Sends this node's publishes out, and hands the other nodes' to
    /// `deliver` (topic, message), until the returned tasks are aborted.
    pub(crate) async fn serve_topics(
        self: &Arc<Self>,
        deliver: impl Fn(&str, bytes::Bytes) + Send + Sync + 'static,
    ) -> Result<[tokio::task::JoinHandle<()>; 2]> {
        let subject = format!("{}.topics", self.name);
        let mut incoming = self
            .client
            .subscribe(subject.clone())
            .await
            .context("cannot take the other nodes' publishes")?;
        let me = self.node.clone();
        let receive = tokio::spawn(async move {
            while let Some(m) = incoming.next().await {
                let Some(headers) = &m.headers else { continue };
                if headers.get(ORIGIN).map(|o| o.as_str()) == Some(me.as_str()) {
                    continue;
                }
                if let Some(topic) = headers.get(TOPIC) {
                    deliver(topic.as_str(), m.payload.clone());
                }
            }
        });
        let mut outbox = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("the publishes are served already")?;
        let (client, node) = (self.client.clone(), self.node.clone());
        let send = tokio::spawn(async move {
            while let Some((topic, msg)) = outbox.recv().await {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(TOPIC, topic.as_str());
                headers.insert(ORIGIN, node.as_str());
                if let Err(e) = client
                    .publish_with_headers(subject.clone(), headers, msg)
                    .await
                {
                    tracing::warn!(topic, "cannot send a publish to the other nodes: {e}");
                }
            }
        });
        Ok([receive, send])
    }

    /// Asks the node that holds `id` to do `op`. `None` when no other node
    /// holds it (then nobody does, or this node, which has no such child).
    pub(crate) async fn route(&self, id: &str, op: Op, msg: Vec<u8>) -> Option<Answer> {
        // The watched copy answers without a round trip. It may lag the
        // bucket by an instant (a claim just made, or just taken over), so
        // a miss, or a `not_found` from the node it names, asks the bucket.
        let watched = locked(&self.replica.claims)
            .get(&key(id))
            .map(|(claim, _)| claim.owner.clone());
        if let Some(owner) = watched.filter(|o| *o != self.node) {
            let answer = self.ask(&owner, id, op.clone(), msg.clone()).await;
            if !matches!(&answer, Err((code, _)) if code == "not_found") {
                return Some(answer);
            }
        }
        let owner = match self.claim_of(id).await {
            Ok(Some((claim, _))) if claim.owner != self.node => claim.owner,
            Ok(_) => return None,
            Err(e) => return Some(Err(("unavailable".into(), format!("{e:#}")))),
        };
        Some(self.ask(&owner, id, op, msg).await)
    }

    /// The live nodes other than this one.
    pub(crate) fn others(&self) -> Vec<String> {
        let mut live = self.live();
        live.retain(|n| *n != self.node);
        live
    }

    /// Whether this node reaches the cluster now: connected to NATS, and
    /// holding its lease.
    pub(crate) fn reachable(&self) -> bool {
        !self.fenced() && self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Asks node `owner` to do `op` on its child `id`. While this node is
    /// cut off from NATS it answers `unavailable` at once, rather than
    /// holding the request until the connection is back.
    pub(crate) async fn ask(&self, owner: &str, id: &str, op: Op, msg: Vec<u8>) -> Answer {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err((
                "unavailable".into(),
                format!("this node is not connected to NATS, so it cannot reach node {owner}"),
            ));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ID, id);
        let (name, timeout) = match &op {
            Op::Call(t) => {
                headers.insert(TIMEOUT_MS, t.as_millis().to_string().as_str());
                // The callee's node times the call out; this one waits a
                // little longer for its answer.
                ("call", *t + Duration::from_secs(1))
            }
            Op::Cast => ("cast", REQUEST_TIMEOUT),
            Op::Stop => ("stop", REQUEST_TIMEOUT),
            Op::Restart => ("restart", REQUEST_TIMEOUT),
            Op::Kill(reason) => {
                headers.insert(REASON, reason.as_str());
                ("kill", REQUEST_TIMEOUT)
            }
            Op::Get => ("get", READ_TIMEOUT),
            Op::List(after, limit) => {
                if let Some(after) = after {
                    headers.insert(AFTER, after.as_str());
                }
                headers.insert(LIMIT, limit.to_string().as_str());
                ("list", READ_TIMEOUT)
            }
            Op::Start => ("start", REQUEST_TIMEOUT),
            Op::Adopt(_) => ("adopt", REQUEST_TIMEOUT),
            Op::Drain => ("drain", DRAIN_TIMEOUT),
            Op::Link(_, key) => {
                headers.insert(WATCH, key.to_string().as_str());
                ("link", READ_TIMEOUT)
            }
            Op::LinkExit(initiator, key) => {
                headers.insert(WATCH, key.to_string().as_str());
                headers.insert(INITIATOR, initiator.as_str());
                ("link-exit", READ_TIMEOUT)
            }
            Op::Monitor(_, key) | Op::Demonitor(_, key) | Op::Down(key) => {
                headers.insert(WATCH, key.to_string().as_str());
                let name = match &op {
                    Op::Monitor(..) => "monitor",
                    Op::Demonitor(..) => "demonitor",
                    _ => "down",
                };
                (name, READ_TIMEOUT)
            }
        };
        headers.insert(ORIGIN, self.node.as_str());
        headers.insert(OP, name);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(msg.into())
            .timeout(Some(timeout));
        let answer = self.client.send_request(self.subject(owner), request).await;
        match answer {
            Ok(reply) => match reply.headers.as_ref().and_then(|h| h.get(ERROR)) {
                Some(code) => Err((
                    code.as_str().to_string(),
                    String::from_utf8_lossy(&reply.payload).into_owned(),
                )),
                None => Ok(reply.payload.to_vec()),
            },
            Err(e) => match e.kind() {
                async_nats::client::RequestErrorKind::TimedOut => Err((
                    "timeout".into(),
                    format!("node {owner} did not answer in time"),
                )),
                async_nats::client::RequestErrorKind::NoResponders => Err((
                    "unavailable".into(),
                    format!("node {owner}, which runs {id}, does not answer"),
                )),
                async_nats::client::RequestErrorKind::MaxPayloadExceeded => Err((
                    "failed".into(),
                    format!("the message is larger than NATS takes: {e}"),
                )),
                _ => Err((
                    "unavailable".into(),
                    format!("cannot reach node {owner}: {e}"),
                )),
            },
        }
    }

    /// Whether singleton `spec` should run here now, claiming it for this
    /// node if so: its home is the live node, among those that declare
    /// it, that rendezvous hashing picks; the claim is created, or taken
    /// over from a node that is gone. `false` while another live node
    /// still holds it (it gives it up when it sees it is not the home).
    pub(crate) async fn singleton_here(&self, spec: &ChildSpec) -> Result<bool> {
        if self.home_of(&spec.id).as_deref() != Some(self.node.as_str()) {
            return Ok(false);
        }
        match self.claim_of(&spec.id).await? {
            None => Ok(self.claim_as(spec, true).await.is_ok()),
            // Held since this node claimed it: nobody moved it.
            Some((_, revision)) if self.token(&spec.id) == Some(revision) => Ok(true),
            // This node's from before (a restart, a lost lease): claimed
            // again, by a compare-and-set.
            Some((claim, revision)) if claim.owner == self.node => {
                self.move_claim(&spec.id, &claim, revision).await
            }
            Some((claim, revision)) => {
                let live = self.live();
                if live.contains(&claim.owner) {
                    return Ok(false);
                }
                let orphan = Orphan {
                    spec: spec.clone(),
                    claim,
                    revision,
                };
                self.take_over(&orphan).await
            }
        }
    }

    /// Claims member `spec` of a singleton group this node holds, so that
    /// other nodes route to it: created, or moved here from whichever node
    /// ran the group before (the group's claim decides; this follows it).
    pub(crate) async fn claim_member(&self, spec: &ChildSpec) -> Result<()> {
        loop {
            match self.claim_of(&spec.id).await? {
                None => match self.claim_as(spec, true).await {
                    Ok(()) => return Ok(()),
                    Err(StartError::AlreadyStarted(_)) => continue,
                    Err(e) => anyhow::bail!("{e}"),
                },
                Some((claim, _)) if claim.owner == self.node => return Ok(()),
                Some((claim, _)) if !claim.singleton => anyhow::bail!(
                    "the id {} is a dynamic child's on node {}",
                    spec.id,
                    claim.owner
                ),
                Some((claim, revision)) => {
                    if self.move_claim(&spec.id, &claim, revision).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The node singleton `id` belongs on now, if any live node declares it.
    pub(crate) fn home_of(&self, id: &str) -> Option<String> {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        let declaring: Vec<String> = locked(&self.replica.members)
            .values()
            .filter(|(info, seen)| {
                seen.elapsed() < timeout
                    && !info.draining
                    && !(info.node == self.node && self.draining())
                    && info.singletons.iter().any(|s| s == id)
            })
            .map(|(info, _)| info.node.clone())
            .collect();
        heir(id, &declaring).cloned()
    }

    /// The live nodes that take children: not draining.
    fn candidates(&self) -> Vec<String> {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        locked(&self.replica.members)
            .values()
            .filter(|(info, seen)| seen.elapsed() < timeout && !info.draining)
            .map(|(info, _)| info.node.clone())
            .filter(|node| *node != self.node || !self.draining())
            .collect()
    }

    /// Places a child: the live node, not draining, that runs the fewest
    /// children by its last heartbeat and the children this node placed on
    /// it lately (this node on a tie, then by name). The choice counts as
    /// one more child there until a heartbeat of that node comes two
    /// heartbeats later.
    pub(crate) fn least_loaded(&self) -> Option<String> {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        let candidates = self.candidates();
        let members = locked(&self.replica.members);
        let mut placed = locked(&self.replica.placed);
        let load = |info: &NodeInfo| info.children + placed.get(&info.node).map_or(0, Vec::len);
        let node = members
            .values()
            .filter(|(info, seen)| seen.elapsed() < timeout && candidates.contains(&info.node))
            .min_by_key(|(info, _)| (load(info), info.node != self.node, info.node.clone()))
            .map(|(info, _)| info.node.clone())?;
        placed
            .entry(node.clone())
            .or_default()
            .push(std::time::Instant::now());
        Some(node)
    }

    /// The node child `id` goes to when this node is drained: rendezvous
    /// hashing over the live nodes that take children, this one aside.
    pub(crate) fn drain_target(&self, id: &str) -> Option<String> {
        let mut others = self.candidates();
        others.retain(|n| *n != self.node);
        heir(id, &others).cloned()
    }

    /// Takes over child `id`, which node `from` stopped for this node
    /// (draining): a compare-and-set of the claim `from` holds, raising
    /// the epoch, then the state's fence. The spec to run, or `None` when
    /// `from` holds no such claim.
    pub(crate) async fn take_handed(&self, id: &str, from: &str) -> Result<Option<ChildSpec>> {
        let Some((claim, revision)) = self.claim_of(id).await? else {
            return Ok(None);
        };
        if claim.owner != from {
            return Ok(None);
        }
        let spec = claim.spec.to_spec(id);
        Ok(self.move_claim(id, &claim, revision).await?.then_some(spec))
    }

    /// The node that runs `id`, other than this one: from the watched
    /// claims, or the bucket when they do not know it.
    pub(crate) async fn locate(&self, id: &str) -> Option<String> {
        let watched = locked(&self.replica.claims)
            .get(&key(id))
            .map(|(claim, _)| claim.owner.clone());
        let owner = match watched {
            Some(owner) => Some(owner),
            None => self.owner_of(id).await.ok().flatten(),
        };
        owner.filter(|o| *o != self.node)
    }

    /// Whether this node saw `node`'s heartbeat within `node_timeout_ms`.
    pub(crate) fn is_live(&self, node: &str) -> bool {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        locked(&self.replica.members)
            .get(node)
            .is_some_and(|(_, seen)| seen.elapsed() < timeout)
    }

    /// The owner of `id`'s claim, read from the bucket.
    pub(crate) async fn owner_of(&self, id: &str) -> Result<Option<String>> {
        Ok(self.claim_of(id).await?.map(|(c, _)| c.owner))
    }

    /// The nodes whose heartbeat this node saw within `node_timeout_ms`.
    fn live(&self) -> Vec<String> {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        locked(&self.replica.members)
            .values()
            .filter(|(_, seen)| seen.elapsed() < timeout)
            .map(|(info, _)| info.node.clone())
            .collect()
    }

    /// Leaves the cluster: the node's key goes at once, rather than when
    /// its heartbeat ages out.
    pub(crate) async fn leave(&self) {
        for w in &self.watchers {
            w.abort();
        }
        if let Err(e) = self.nodes.delete(&self.node).await {
            tracing::warn!("cannot remove the node from the cluster: {e}");
        }
    }
}

/// The bucket `name`, created if it does not exist yet. Its stream is
/// made here with the key-value conventions (what async-nats'
/// `create_key_value` makes), because that call first reads the account's
/// info, which nats-server 2.9 (Debian's) answers in a form the client
/// does not parse.
async fn bucket(js: &jetstream::Context, name: String, max_age: Duration) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.with_context(|| {
        format!("cannot create the JetStream bucket {name} (is JetStream on: nats-server -js?)")
    })?;
    js.get_key_value(&name)
        .await
        .with_context(|| format!("cannot open the JetStream bucket {name}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `nats-server -js` on a free loopback port with a temporary store,
    /// killed on drop.
    pub(crate) struct Nats {
        pub(crate) url: String,
        _process: tokio::process::Child,
        _store: tempfile::TempDir,
    }

    impl Nats {
        /// `None` (with the reason printed) when `nats-server` is not
        /// installed.
        pub(crate) async fn start() -> Option<Nats> {
            if std::process::Command::new("nats-server")
                .arg("--version")
                .output()
                .is_err()
            {
                eprintln!("skipped: nats-server is not on PATH (apt-get install nats-server)");
                return None;
            }
            let store = tempfile::tempdir().expect("a temporary folder");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let process = tokio::process::Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(store.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("nats-server starts");
            let addr = format!("127.0.0.1:{port}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nats-server did not listen"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(Nats {
                url: format!("nats://{addr}"),
                _process: process,
                _store: store,
            })
        }
    }

    #[test]
    fn credentials_in_a_url_are_taken_out_of_it() {
        assert_eq!(
            url_auth("nats://u:p@h:4222"),
            (
                Some(UrlAuth::UserPassword("u".into(), "p".into())),
                "nats://h:4222".into()
            )
        );
        assert_eq!(
            url_auth("nats://tok@h:1,nats://h:2"),
            (
                Some(UrlAuth::Token("tok".into())),
                "nats://h:1,nats://h:2".into()
            )
        );
        assert_eq!(url_auth("nats://h:4222"), (None, "nats://h:4222".into()));
    }

    #[test]
    fn ids_become_valid_distinct_keys() {
        assert_eq!(key("a.b:c@d"), "a=db=cc=ad");
        assert_eq!(key(".x."), "=dx=d");
        assert_ne!(key("a:b"), key("a@b"));
        for id in ["a.b:c@d", ".x.", "plain-id_1"] {
            assert_eq!(unkey(&key(id)), id);
        }
    }
}
