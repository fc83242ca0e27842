//! The native baseline: the same `chaos` logic as plain tokio actors (a task
//! and an mpsc mailbox each, a shared map as the registry), with no wasm.
//! Each workload that has a native counterpart runs it in the same process
//! and run, so a noisy machine affects both sides alike.

use dashmap::DashMap;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    State,
    Add(i64),
    Crash,
    Spin(u64),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cast {
    Bump,
}

enum Msg {
    Call(Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>),
    Cast(Vec<u8>),
}

/// The same loop as chaos's `spin`.
pub fn spin(n: u64) -> u64 {
    let mut acc: u64 = 0;
    let mut i = n;
    while i > 0 {
        acc = (acc + i * i) % 1_000_000_007;
        i -= 1;
    }
    acc
}

struct State {
    args: Value,
    count: i64,
}

/// A registry of native actors.
#[derive(Default, Clone)]
pub struct NativeHost {
    actors: Arc<DashMap<Arc<str>, mpsc::Sender<Msg>>>,
}

impl NativeHost {
    /// Spawns an actor and waits until its init (parsing the args) ran, as
    /// `start_child` waits for `init`.
    pub async fn spawn(&self, id: &str, args: &[u8]) {
        let (tx, mut rx) = mpsc::channel::<Msg>(10_000);
        let (ready, started) = oneshot::channel();
        let args = args.to_vec();
        tokio::spawn(async move {
            let init = || State {
                args: serde_json::from_slice(&args).unwrap_or(Value::Null),
                count: 0,
            };
            let mut state = init();
            let _ = ready.send(());
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Call(bytes, reply) => match serde_json::from_slice::<Call>(&bytes) {
                        // A crash answers the caller and starts over from the
                        // init args: what a supervisor does for the actor.
                        Ok(Call::Crash) => {
                            let _ = reply.send(Err("crashed".into()));
                            state = init();
                        }
                        Ok(call) => {
                            let out = match call {
                                Call::State => json!({"args": state.args, "count": state.count}),
                                Call::Add(n) => {
                                    state.count += n;
                                    state.count.into()
                                }
                                Call::Spin(n) => spin(n).into(),
                                Call::Crash => Value::Null,
                            };
                            let _ = reply.send(Ok(serde_json::to_vec(&out).unwrap_or_default()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    },
                    Msg::Cast(bytes) => {
                        if let Ok(Cast::Bump) = serde_json::from_slice::<Cast>(&bytes) {
                            state.count += 1;
                        }
                    }
                }
            }
        });
        self.actors.insert(id.into(), tx);
        let _ = started.await;
    }

    pub async fn call(&self, id: &str, msg: Vec<u8>) -> Result<Vec<u8>, String> {
        let tx = self
            .actors
            .get(id)
            .map(|t| t.value().clone())
            .ok_or("not_found")?;
        let (reply, rx) = oneshot::channel();
        tx.try_send(Msg::Call(msg, reply))
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|e| e.to_string())?
    }

    pub fn cast(&self, id: &str, msg: Vec<u8>) -> Result<(), String> {
        let actors = &self.actors;
        let tx = actors.get(id).ok_or("not_found")?;
        tx.try_send(Msg::Cast(msg)).map_err(|e| e.to_string())
    }

    /// Stops every actor.
    pub fn clear(&self) {
        self.actors.clear();
    }
}
