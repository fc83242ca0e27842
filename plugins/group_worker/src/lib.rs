//! `group_worker`: the score of one conversation group, decaying over time.
//! `group_manager` starts one per active group, as `group:G`.
//!
//! Args: `{"group": G, "report_ms": N, "initial": S, "decay": D, "floor": F,
//! "high": H}` (numbers; `initial` is the starting score).
//!
//! | message                          | kind | effect                                  |
//! |----------------------------------|------|-----------------------------------------|
//! | `{"message": {"author": A}}`     | cast | adds 10 if A differs from the previous message's author, else half the previous value |
//! | `"score"`                        | call | the current score                       |
//!
//! Every `report_ms` the score is multiplied by `decay`, then
//! `{"group": G, "score": s}` is published on topic `groups:scores`; a score
//! at or above `high` also publishes `{"group": G, "event": "hot"}` on
//! `groups`, and a score below `floor` makes the worker stop (`normal`).
//!
//! A hot reload carries its whole state over, and its pending report timer
//! with it: it reports at its period whatever the number of reloads.

use serde::{Deserialize, Serialize};
use wasmvisor_sdk::{ExitReason, Info, Message, Plugin, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    group: String,
    report_ms: u64,
    initial: f64,
    decay: f64,
    floor: f64,
    high: f64,
}

#[derive(Deserialize)]
struct ChatMessage {
    author: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Msg {
    Message(ChatMessage),
    Score,
}

#[derive(Default, Serialize, Deserialize)]
struct GroupWorker {
    group: String,
    report_ms: u64,
    decay: f64,
    floor: f64,
    high: f64,
    score: f64,
    last_author: Option<String>,
    last_value: f64,
}

impl GroupWorker {
    fn observe(&mut self, author: String) {
        let value = match &self.last_author {
            Some(previous) if *previous == author => self.last_value / 2.0,
            _ => 10.0,
        };
        self.score += value;
        self.last_value = value;
        self.last_author = Some(author);
    }

    fn report(&mut self) {
        self.score *= self.decay;
        let group = &self.group;
        wasmvisor_sdk::publish(
            "groups:scores",
            &json!({"group": group, "score": self.score}),
        );
        if self.score >= self.high {
            wasmvisor_sdk::publish("groups", &json!({"group": group, "event": "hot"}));
        }
        if self.score < self.floor {
            wasmvisor_sdk::stop(ExitReason::Normal);
        } else {
            wasmvisor_sdk::send_after(self.report_ms, &"report");
        }
    }
}

impl Plugin for GroupWorker {
    type Args = Args;
    type Call = Msg;
    type Reply = serde_json::Value;
    type Cast = Msg;

    fn init(&mut self, args: Args) -> Result<(), String> {
        if args.report_ms == 0 {
            return Err("report_ms must be at least 1".into());
        }
        if !(args.decay.is_finite() && args.decay >= 0.0) {
            return Err("decay must be a non-negative number".into());
        }
        self.group = args.group;
        self.report_ms = args.report_ms;
        self.score = args.initial;
        self.decay = args.decay;
        self.floor = args.floor;
        self.high = args.high;
        wasmvisor_sdk::send_after(self.report_ms, &"report");
        Ok(())
    }

    fn handle_call(&mut self, msg: Msg) -> serde_json::Value {
        match msg {
            Msg::Score => json!(self.score),
            Msg::Message(m) => {
                self.observe(m.author);
                json!(self.score)
            }
        }
    }

    fn handle_cast(&mut self, msg: Msg) {
        if let Msg::Message(m) = msg {
            self.observe(m.author);
        }
    }

    fn handle_info(&mut self, info: Info) {
        if let Info::Timer(_) = info {
            self.report();
        }
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(self))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        *self = state.decode().map_err(|e| e.to_string())?;
        Ok(())
    }
}

wasmvisor_sdk::export!(GroupWorker);
