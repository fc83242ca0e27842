//! `chaos`: a plugin that misbehaves on request, for tests and the benchmark.
//!
//! Args: any JSON; kept and returned by `"state"`. Three keys act at `init`:
//! `{"subscribe": [T, ...]}` subscribes to those topics (so a restarted
//! instance is subscribed again), `{"fail_init": "why"}` makes `init` return
//! that error, and `{"crash_init": true}` makes `init` trap.
//!
//! | message (call)                          | effect and reply                                         |
//! |-----------------------------------------|----------------------------------------------------------|
//! | `"state"`                               | `{"args": ARGS, "count": N}`                             |
//! | `{"add": n}`                            | adds n to the count; the new count                       |
//! | `"crash"`                               | traps (also as a cast)                                   |
//! | `{"spin": n}`                           | `acc = (acc + i*i) % 1_000_000_007` for i = n..1; acc    |
//! | `{"alloc_mb": n}`                       | allocates and touches n MiB (kept); n                    |
//! | `"stop"`                                | stops with reason `normal` after replying `"stopping"`   |
//! | `"version"`                             | the crate version                                        |
//! | `{"call": {"to": ID, "msg": M}}`        | calls ID with M; its reply, or `{"error": CODE, ...}`    |
//! | `{"cast": {"to": ID, "msg": M}}`        | casts M to ID; `"ok"` or `{"error": CODE, ...}`          |
//! | `{"publish": {"topic": T, "msg": M}}`   | publishes M on T; `"ok"`                                 |
//! | `{"subscribe": T}`                      | subscribes to T (until the instance exits); `"ok"`       |
//! | `{"send_after": {"ms": N, "msg": M}}`   | sets a timer; its id                                     |
//! | `{"cancel_timer": ID}`                  | cancels a timer; whether it was pending                  |
//! | `{"monitor": ID}`                       | monitors ID; `"ok"`                                      |
//! | `"infos"`                               | every info received so far, in order (see below)         |
//! | `"self"`                                | this instance's id                                       |
//! | `{"print": TEXT}`                       | writes TEXT to stdout and to stderr; `"ok"`              |
//!
//! Casts: `"bump"` adds 1, `{"add": n}` adds n, `"crash"` traps.
//!
//! Infos are recorded as `{"timer": M}`, `{"down": {"id": ID, "reason": R}}`
//! and `{"event": {"topic": T, "msg": M}}`, where R is `"normal"`,
//! `"shutdown"`, `"noproc"` or `{"trap": "..."}` and the like.
//!
//! `snapshot`/`restore` carry `count` across a hot reload.

use serde::Deserialize;
use serde_json::{Value, json};
use wasmvisor_sdk::{ExitReason, Info, Message, Plugin, TimerRef};

#[derive(Default)]
struct Chaos {
    args: Value,
    count: i64,
    infos: Vec<Value>,
    hoard: Vec<Vec<u8>>,
}

#[derive(Deserialize)]
struct Envelope {
    to: String,
    msg: Value,
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
    State,
    Add(i64),
    Crash,
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
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cast {
    Bump,
    Add(i64),
    Crash,
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
        if let Some(topics) = args.get("subscribe").and_then(Value::as_array) {
            for topic in topics.iter().filter_map(Value::as_str) {
                wasmvisor_sdk::subscribe(topic);
            }
        }
        self.args = args;
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> Value {
        match msg {
            Call::State => json!({"args": self.args, "count": self.count}),
            Call::Add(n) => {
                self.count += n;
                self.count.into()
            }
            Call::Crash => std::process::abort(),
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
            Call::Call(e) => match wasmvisor_sdk::call::<Value>(&e.to, &e.msg) {
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
            Call::Monitor(id) => {
                wasmvisor_sdk::monitor(&id);
                "ok".into()
            }
            Call::Infos => Value::Array(self.infos.clone()),
            Call::SelfId => wasmvisor_sdk::self_id().into(),
            Call::Print(text) => {
                println!("{text}");
                eprintln!("{text}");
                "ok".into()
            }
        }
    }

    fn handle_cast(&mut self, msg: Cast) {
        match msg {
            Cast::Bump => self.count += 1,
            Cast::Add(n) => self.count += n,
            Cast::Crash => std::process::abort(),
        }
    }

    fn handle_info(&mut self, info: Info) {
        let decode = |m: &Message| m.decode::<Value>().unwrap_or(Value::Null);
        let recorded = match info {
            Info::Timer(m) => json!({"timer": decode(&m)}),
            Info::Down { id, reason } => json!({"down": {"id": id, "reason": reason}}),
            Info::Event { topic, msg } => json!({"event": {"topic": topic, "msg": decode(&msg)}}),
        };
        self.infos.push(recorded);
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(&self.count))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        if cfg!(feature = "restore-traps") {
            std::process::abort();
        }
        self.count = state.decode().map_err(|e| e.to_string())?;
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
