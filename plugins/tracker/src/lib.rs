//! `tracker`: a transaction tracker, one instance per transaction.
//!
//! Start it with any JSON object as args, typically
//! `{"transaction_id": "txn_1"}`. It records what it observes.
//!
//! | message (call)      | reply                                   |
//! |---------------------|-----------------------------------------|
//! | `{"observe": X}`    | the number of observations so far       |
//! | `"state"`           | `{"args": ARGS, "events": [X, ...]}`    |
//! | `"version"`         | the crate version, e.g. `"0.1.0"`       |
//!
//! Casts of `{"observe": X}` record X without a reply. The args and the
//! observations are carried across a hot reload.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmvisor_sdk::{Message, Plugin};

#[derive(Default)]
struct Tracker {
    args: Value,
    events: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    Observe(Value),
    State,
    Version,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cast {
    Observe(Value),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Reply<'a> {
    Count(usize),
    State {
        args: &'a Value,
        events: &'a [Value],
    },
    Version(&'static str),
}

impl Plugin for Tracker {
    type Args = Value;
    type Call = Call;
    type Reply = Value;
    type Cast = Cast;

    fn init(&mut self, args: Value) -> Result<(), String> {
        if !args.is_object() {
            return Err(format!("args must be a JSON object, got {args}"));
        }
        self.args = args;
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> Value {
        let reply = match msg {
            Call::Observe(x) => {
                self.events.push(x);
                Reply::Count(self.events.len())
            }
            Call::State => Reply::State {
                args: &self.args,
                events: &self.events,
            },
            Call::Version => Reply::Version(env!("CARGO_PKG_VERSION")),
        };
        serde_json::to_value(reply).unwrap_or(Value::Null)
    }

    fn handle_cast(&mut self, msg: Cast) {
        let Cast::Observe(x) = msg;
        self.events.push(x);
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(
            &json!({"args": self.args, "events": self.events}),
        ))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Kept {
            args: Value,
            events: Vec<Value>,
        }
        let kept: Kept = state.decode().map_err(|e| e.to_string())?;
        (self.args, self.events) = (kept.args, kept.events);
        Ok(())
    }
}

wasmvisor_sdk::export!(Tracker);
