//! `balances`: the read side of a CQRS pair with `ledger`, a projection of
//! its events into account balances.
//!
//! Args: `{"ledger": ID}` (optional, default `"ledger"`): the ledger's id.
//!
//! | message (call)    | reply                          |
//! |-------------------|--------------------------------|
//! | `{"balance": A}`  | A's balance (a number)         |
//! | `"seq"`           | the seq of the last event applied |
//!
//! On `init` it subscribes to topic `ledger` first and then rebuilds from
//! the ledger's `events_since`: an event published during the rebuild waits
//! in the mailbox and is skipped if the rebuild already applied it. Events
//! are applied strictly in seq order; one that arrives after a gap makes it
//! fetch the missing ones from the ledger, so none is lost or applied twice.

use serde::Deserialize;
use std::collections::HashMap;
use wasmvisor_sdk::{CallError, Info, Plugin, json};

#[derive(Deserialize)]
struct Event {
    seq: u64,
    account: String,
    delta: i64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Args {
    ledger: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    Balance(String),
    Seq,
}

#[derive(Default)]
struct Balances {
    ledger: String,
    seq: u64,
    balances: HashMap<String, i64>,
}

impl Balances {
    fn apply(&mut self, event: Event) {
        if event.seq == self.seq + 1 {
            *self.balances.entry(event.account).or_default() += event.delta;
            self.seq = event.seq;
        }
    }

    /// Applies every event after the last one applied.
    fn catch_up(&mut self) -> Result<(), CallError> {
        let events: Vec<Event> =
            wasmvisor_sdk::call(&self.ledger, &json!({"events_since": self.seq + 1}))?;
        for e in events {
            self.apply(e);
        }
        Ok(())
    }
}

impl Plugin for Balances {
    type Args = Option<Args>;
    type Call = Call;
    type Reply = serde_json::Value;
    type Cast = Call;

    fn init(&mut self, args: Option<Args>) -> Result<(), String> {
        self.ledger = args
            .and_then(|a| a.ledger)
            .unwrap_or_else(|| "ledger".into());
        // Subscribe before reading the log: nothing published in between
        // can be missed.
        wasmvisor_sdk::subscribe("ledger");
        self.catch_up()
            .map_err(|e| format!("cannot rebuild from {}: {e}", self.ledger))
    }

    fn handle_call(&mut self, msg: Call) -> serde_json::Value {
        match msg {
            Call::Balance(account) => json!(self.balances.get(&account).copied().unwrap_or(0)),
            Call::Seq => json!(self.seq),
        }
    }

    fn handle_info(&mut self, info: Info) {
        let Info::Event { msg, .. } = info else {
            return;
        };
        let Ok(event) = msg.decode::<Event>() else {
            return;
        };
        if event.seq <= self.seq {
            return;
        }
        if event.seq == self.seq + 1 {
            self.apply(event);
        } else if let Err(e) = self.catch_up() {
            // The ledger is gone: its restart restarts this projection too.
            wasmvisor_sdk::log(
                wasmvisor_sdk::Level::Warn,
                &format!("cannot catch up with {}: {e}", self.ledger),
            );
        }
    }
}

wasmvisor_sdk::export!(Balances);
