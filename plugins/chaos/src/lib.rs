//! `chaos`: a plugin that misbehaves on request, for tests and the benchmark.
//!
//! Args: any JSON; kept and returned by `"state"`. These keys act at `init`:
//! `{"subscribe": [T, ...]}` subscribes to those topics (so a restarted
//! instance is subscribed again), `{"fail_init": "why"}` makes `init` return
//! that error, `{"crash_init": true}` makes `init` trap, `{"ignore_init":
//! true}` makes it ask to be ignored, and `{"continue": M}` makes
//! `handle_continue(M)` run first: it records `{"continue": M}`, and
//! publishes when M is `{"publish": {"topic": T, "msg": X}}`. `{"timer":
//! {"ms": N, "msg": M}}` sets a timer at `init` (so every start arms it).
//!
//! | message (call)                          | effect and reply                                         |
//! |-----------------------------------------|----------------------------------------------------------|
//! | `"state"`                               | `{"args": ARGS, "count": N}`                             |
//! | `{"add": n}`                            | adds n to the count; the new count                       |
//! | `"crash"`                               | traps (also as a cast)                                   |
//! | `"panic"`                               | panics with `chaos panic` in `panic_now`, which traps    |
//! | `{"spin": n}`                           | `acc = (acc + i*i) % 1_000_000_007` for i = n..1; acc    |
//! | `{"alloc_mb": n}`                       | allocates and touches n MiB (kept); n                    |
//! | `"stop"`                                | stops with reason `normal` after replying `"stopping"`   |
//! | `"version"`                             | the crate version                                        |
//! | `{"call": {"to": ID, "msg": M, "timeout_ms": N}}` | calls ID with M (N optional); its reply, or `{"error": CODE, ...}` |
//! | `{"cast": {"to": ID, "msg": M}}`        | casts M to ID; `"ok"` or `{"error": CODE, ...}`          |
//! | `{"publish": {"topic": T, "msg": M}}`   | publishes M on T; `"ok"`                                 |
//! | `{"subscribe": T}`                      | subscribes to T (until the instance exits); `"ok"`       |
//! | `{"send_after": {"ms": N, "msg": M}}`   | sets a timer; its id                                     |
//! | `{"cancel_timer": ID}`                  | cancels a timer; whether it was pending                  |
//! | `{"monitor": ID}`                       | monitors ID; the monitor's reference                     |
//! | `{"demonitor": REF}`                    | removes a monitor and its waiting `down`; whether it was still active (false once fired) |
//! | `{"link": ID}`                          | links with ID; `"ok"` or `{"error": CODE, ...}`           |
//! | `{"unlink": ID}`                        | removes the link with ID; `"ok"`                         |
//! | `{"trap_exits": BOOL}`                  | traps exit signals of linked children or not; `"ok"`     |
//! | `{"defer": {"ms": N, "msg": M}}`        | answers M after N ms, through a timer and a deferred reply; other calls are served meanwhile |
//! | `{"fetch_async": URL}`                  | sends `GET URL` without waiting; the request id          |
//! | `{"stop_child": ID}`                    | stops ID and waits until it is gone; `"ok"` or `{"error": CODE}` |
//! | `{"all": [M, ...]}`                     | handles each call M in turn within this one message; their replies |
//! | `"infos"`                               | every info received so far, in order (see below)         |
//! | `"self"`                                | this instance's id                                       |
//! | `{"print": TEXT}`                       | writes TEXT to stdout and to stderr; `"ok"`              |
//! | `"hibernate"`                           | asks to hibernate after this call; `"ok"`                |
//! | `"checkpoint"`                          | stores the state now; `"ok"` or `{"error": CODE}`        |
//!
//! Casts: `"bump"` adds 1, `{"add": n}` adds n, `"crash"` traps,
//! `"hibernate"` asks to hibernate.
//!
//! A timer whose message is `{"every": {"ms": N, "times": K}}` is recorded,
//! then set again with K-1 (while K > 1), and the child asks to hibernate
//! until the next one: a periodic worker that sleeps between reports.
//!
//! Infos are recorded as `{"timer": M}`, `{"down": {"ref": REF, "id": ID,
//! "reason": R}}`, `{"event": {"topic": T, "msg": M}}`, `{"exit": {"id": ID,
//! "reason": R}}` and `{"http": {"id": ID, "status": S, "body": TEXT}}` (or
//! `{"http": {"id": ID, "error": WHY}}`), where R is `"normal"`,
//! `"shutdown"`, `"noproc"` or `{"trap": "..."}` and the like and TEXT is
//! the body as UTF-8 text. The timers of `defer` are not recorded.
//!
//! `snapshot`/`restore` carry everything a hot reload must keep: the args,
//! the count, the infos and the calls waiting for a deferred reply.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use wasmvisor_sdk::http::{self, Request};
use wasmvisor_sdk::{ExitReason, Info, Message, MonitorRef, Plugin, ReplyTo, TimerRef};

#[derive(Default)]
struct Chaos {
    state: State,
    hoard: Vec<Vec<u8>>,
}

/// What a hot reload carries over: everything `init` set up and later
/// messages read.
#[derive(Default, Serialize, Deserialize)]
struct State {
    args: Value,
    count: i64,
    infos: Vec<Value>,
    /// Calls waiting for a deferred reply, by the number in their timer's
    /// message: who to answer, and with what.
    deferred: BTreeMap<u64, (u64, Value)>,
    next_deferred: u64,
}

/// The message of a `defer` timer.
#[derive(Serialize, Deserialize)]
struct Deferred {
    deferred: u64,
}

#[derive(Deserialize)]
struct Envelope {
    to: String,
    msg: Value,
    /// A call's timeout, ms (the SDK's default when absent).
    #[serde(default)]
    timeout_ms: Option<u32>,
}

#[derive(Deserialize)]
struct Publish {
    topic: String,
    msg: Value,
}

#[derive(Deserialize)]
struct Timer {
    ms: u64,
    msg: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    All(Vec<Call>),
    StopChild(String),
    Defer(Timer),
    Demonitor(u64),
    Link(String),
    Unlink(String),
    TrapExits(bool),
    FetchAsync(String),
    State,
    Add(i64),
    Crash,
    Panic,
    Spin(u64),
    AllocMb(u32),
    Stop,
    Version,
    Call(Envelope),
    Cast(Envelope),
    Publish(Publish),
    Subscribe(String),
    SendAfter(Timer),
    CancelTimer(u64),
    Monitor(String),
    Infos,
    #[serde(rename = "self")]
    SelfId,
    Print(String),
    Hibernate,
    Checkpoint,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cast {
    Bump,
    Add(i64),
    Crash,
    Hibernate,
}

/// The message of a periodic timer.
#[derive(Serialize, Deserialize)]
struct Every {
    every: Period,
}

#[derive(Serialize, Deserialize)]
struct Period {
    ms: u64,
    times: u32,
}

fn spin(n: u64) -> u64 {
    let mut acc: u64 = 0;
    let mut i = n;
    while i > 0 {
        acc = (acc + i * i) % 1_000_000_007;
        i -= 1;
    }
    acc
}

/// A frame of its own for the backtrace tests: a panic here must show
/// `panic_now` in the trap's backtrace.
#[inline(never)]
fn panic_now() -> ! {
    panic!("chaos panic")
}

fn error_value(code: &str, message: String) -> Value {
    json!({"error": code, "message": message})
}

impl Plugin for Chaos {
    type Args = Value;
    type Call = Call;
    type Reply = Value;
    type Cast = Cast;

    fn init(&mut self, args: Value) -> Result<(), String> {
        if let Some(why) = args.get("fail_init").and_then(Value::as_str) {
            return Err(why.to_string());
        }
        if args.get("crash_init") == Some(&Value::Bool(true)) {
            std::process::abort();
        }
        if args.get("ignore_init") == Some(&Value::Bool(true)) {
            wasmvisor_sdk::ignore();
        }
        if let Some(topics) = args.get("subscribe").and_then(Value::as_array) {
            for topic in topics.iter().filter_map(Value::as_str) {
                wasmvisor_sdk::subscribe(topic);
            }
        }
        if let Ok(t) = serde_json::from_value::<Timer>(args["timer"].clone()) {
            wasmvisor_sdk::send_after(t.ms, &t.msg);
        }
        if let Some(first) = args.get("continue") {
            wasmvisor_sdk::continue_with(first);
        }
        self.state.args = args;
        Ok(())
    }

    fn handle_continue(&mut self, msg: Message) {
        let msg = msg.decode::<Value>().unwrap_or(Value::Null);
        if let Ok(p) = serde_json::from_value::<Publish>(msg["publish"].clone()) {
            wasmvisor_sdk::publish(&p.topic, &p.msg);
        }
        self.state.infos.push(json!({"continue": msg}));
    }

    fn handle_call_from(&mut self, msg: Call, from: ReplyTo) -> Option<Value> {
        match msg {
            Call::Defer(t) => {
                let n = self.state.next_deferred;
                self.state.next_deferred += 1;
                self.state.deferred.insert(n, (from.0, t.msg));
                wasmvisor_sdk::send_after(t.ms, &Deferred { deferred: n });
                None
            }
            other => Some(self.handle_call(other)),
        }
    }

    fn handle_call(&mut self, msg: Call) -> Value {
        let state = &mut self.state;
        match msg {
            Call::State => json!({"args": state.args, "count": state.count}),
            Call::Add(n) => {
                state.count += n;
                state.count.into()
            }
            Call::All(calls) => calls.into_iter().map(|c| self.handle_call(c)).collect(),
            Call::StopChild(id) => match wasmvisor_sdk::stop_child(&id) {
                Ok(()) => "ok".into(),
                Err(err) => json!({"error": err.code()}),
            },
            // Answered by `handle_call_from`.
            Call::Defer(_) => Value::Null,
            Call::Demonitor(reference) => wasmvisor_sdk::demonitor(MonitorRef(reference)).into(),
            Call::Link(id) => match wasmvisor_sdk::link(&id) {
                Ok(()) => "ok".into(),
                Err(err) => error_value(err.code(), err.to_string()),
            },
            Call::Unlink(id) => {
                wasmvisor_sdk::unlink(&id);
                "ok".into()
            }
            Call::TrapExits(on) => {
                wasmvisor_sdk::trap_exits(on);
                "ok".into()
            }
            Call::FetchAsync(url) => http::send_async(&Request::get(url)).0.into(),
            Call::Crash => std::process::abort(),
            Call::Panic => panic_now(),
            Call::Spin(n) => spin(n).into(),
            Call::AllocMb(n) => {
                // Touch every page so the memory is really committed.
                self.hoard.push(vec![1u8; n as usize * 1024 * 1024]);
                n.into()
            }
            Call::Stop => {
                wasmvisor_sdk::stop(ExitReason::Normal);
                "stopping".into()
            }
            Call::Version => env!("CARGO_PKG_VERSION").into(),
            Call::Call(e) => match wasmvisor_sdk::call_timeout::<Value>(
                &e.to,
                &e.msg,
                e.timeout_ms
                    .unwrap_or(wasmvisor_sdk::DEFAULT_CALL_TIMEOUT_MS),
            ) {
                Ok(reply) => reply,
                Err(err) => error_value(err.code(), err.to_string()),
            },
            Call::Cast(e) => match wasmvisor_sdk::cast(&e.to, &e.msg) {
                Ok(()) => "ok".into(),
                Err(err) => error_value(err.code(), err.to_string()),
            },
            Call::Publish(p) => {
                wasmvisor_sdk::publish(&p.topic, &p.msg);
                "ok".into()
            }
            Call::Subscribe(topic) => {
                wasmvisor_sdk::subscribe(&topic);
                "ok".into()
            }
            Call::SendAfter(t) => wasmvisor_sdk::send_after(t.ms, &t.msg).0.into(),
            Call::CancelTimer(id) => wasmvisor_sdk::cancel_timer(TimerRef(id)).into(),
            Call::Monitor(id) => wasmvisor_sdk::monitor(&id).0.into(),
            Call::Infos => Value::Array(state.infos.clone()),
            Call::SelfId => wasmvisor_sdk::self_id().into(),
            Call::Print(text) => {
                println!("{text}");
                eprintln!("{text}");
                "ok".into()
            }
            Call::Hibernate => {
                wasmvisor_sdk::hibernate();
                "ok".into()
            }
            Call::Checkpoint => match wasmvisor_sdk::checkpoint(self) {
                Ok(()) => "ok".into(),
                Err(e) => error_value(e.code(), e.to_string()),
            },
        }
    }

    fn handle_cast(&mut self, msg: Cast) {
        match msg {
            Cast::Bump => self.state.count += 1,
            Cast::Add(n) => self.state.count += n,
            Cast::Crash => std::process::abort(),
            Cast::Hibernate => wasmvisor_sdk::hibernate(),
        }
    }

    fn handle_info(&mut self, info: Info) {
        let decode = |m: &Message| m.decode::<Value>().unwrap_or(Value::Null);
        let recorded = match info {
            Info::Timer(m) => {
                if let Ok(Deferred { deferred }) = m.decode()
                    && let Some((to, msg)) = self.state.deferred.remove(&deferred)
                {
                    wasmvisor_sdk::reply(ReplyTo(to), &msg);
                    return;
                }
                if let Ok(Every { every }) = m.decode() {
                    if every.times > 1 {
                        let next = Every {
                            every: Period {
                                ms: every.ms,
                                times: every.times - 1,
                            },
                        };
                        wasmvisor_sdk::send_after(every.ms, &next);
                    }
                    wasmvisor_sdk::hibernate();
                }
                json!({"timer": decode(&m)})
            }
            Info::Down {
                monitor,
                id,
                reason,
            } => json!({"down": {"ref": monitor.0, "id": id, "reason": reason}}),
            Info::Event { topic, msg } => json!({"event": {"topic": topic, "msg": decode(&msg)}}),
            Info::Exit { id, reason } => json!({"exit": {"id": id, "reason": reason}}),
            Info::Http { id, result } => match result {
                Ok(r) => json!({"http": {
                    "id": id.0,
                    "status": r.status,
                    "body": String::from_utf8_lossy(&r.body),
                }}),
                Err(why) => json!({"http": {"id": id.0, "error": why}}),
            },
            _ => return,
        };
        self.state.infos.push(recorded);
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(&self.state))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        if cfg!(feature = "restore-traps") {
            std::process::abort();
        }
        let state: State = state.decode().map_err(|e| e.to_string())?;
        if state.args["refuse_restore_in"] == env!("CARGO_PKG_VERSION") {
            return Err(format!(
                "version {} refuses this state",
                env!("CARGO_PKG_VERSION")
            ));
        }
        self.state = state;
        Ok(())
    }
}

wasmvisor_sdk::export!(Chaos);

#[cfg(test)]
mod tests {
    #[test]
    fn spin_matches_the_documented_value() {
        assert_eq!(super::spin(10_000_000), 1_333_000);
    }
}
