//! `ledger`: the write side of a CQRS pair with [`balances`]. It validates
//! commands, appends the events they cause to its log, and publishes each
//! event on topic `ledger`.
//!
//! | message (call)                                  | reply                              |
//! |-------------------------------------------------|------------------------------------|
//! | `{"deposit": {"account": A, "amount": N}}`      | `{"ok": k}`, k the event's seq     |
//! | `{"withdraw": {"account": A, "amount": N}}`     | `{"ok": k}`, or `{"error": "insufficient_funds"}` |
//! | `{"events_since": k}`                           | the events with seq ≥ k, in order  |
//! | `{"balance": A}`                                | A's balance on the write side      |
//!
//! An event is `{"seq": k, "account": A, "delta": ±N}`; seqs start at 1 and
//! have no gaps. Amounts are positive integers. A rejected command emits
//! nothing. The log is carried across a hot reload; a restart starts a new,
//! empty ledger (run it beside `balances` in a `rest_for_one` group so that
//! the projection restarts with it).
//!
//! [`balances`]: ../balances/index.html

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use wasmvisor_sdk::{Message, Plugin, json};

/// The topic every event is published on.
const TOPIC: &str = "ledger";

#[derive(Serialize, Deserialize, Clone)]
struct Event {
    seq: u64,
    account: String,
    delta: i64,
}

#[derive(Deserialize)]
struct Command {
    account: String,
    amount: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    Deposit(Command),
    Withdraw(Command),
    EventsSince(u64),
    Balance(String),
}

#[derive(Default)]
struct Ledger {
    log: Vec<Event>,
    balances: HashMap<String, i64>,
}

impl Ledger {
    fn apply(&mut self, account: String, delta: i64) -> serde_json::Value {
        let seq = self.log.len() as u64 + 1;
        *self.balances.entry(account.clone()).or_default() += delta;
        let event = Event {
            seq,
            account,
            delta,
        };
        wasmvisor_sdk::publish(TOPIC, &event);
        self.log.push(event);
        json!({"ok": seq})
    }

    fn command(&mut self, cmd: Command, sign: i64) -> serde_json::Value {
        if cmd.account.is_empty() {
            return json!({"error": "invalid_account"});
        }
        if cmd.amount <= 0 {
            return json!({"error": "invalid_amount"});
        }
        let balance = self.balances.get(&cmd.account).copied().unwrap_or(0);
        let Some(after) = balance.checked_add(sign * cmd.amount) else {
            return json!({"error": "invalid_amount"});
        };
        if after < 0 {
            return json!({"error": "insufficient_funds"});
        }
        self.apply(cmd.account, sign * cmd.amount)
    }
}

impl Plugin for Ledger {
    type Args = serde_json::Value;
    type Call = Call;
    type Reply = serde_json::Value;
    type Cast = Call;

    fn handle_call(&mut self, msg: Call) -> serde_json::Value {
        match msg {
            Call::Deposit(cmd) => self.command(cmd, 1),
            Call::Withdraw(cmd) => self.command(cmd, -1),
            Call::EventsSince(k) => {
                let from = k.saturating_sub(1).min(self.log.len() as u64) as usize;
                json!(self.log[from..])
            }
            Call::Balance(account) => json!(self.balances.get(&account).copied().unwrap_or(0)),
        }
    }

    fn handle_cast(&mut self, msg: Call) {
        self.handle_call(msg);
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(&self.log))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        let log: Vec<Event> = state.decode().map_err(|e| e.to_string())?;
        self.balances.clear();
        for e in &log {
            *self.balances.entry(e.account.clone()).or_default() += e.delta;
        }
        self.log = log;
        Ok(())
    }
}

wasmvisor_sdk::export!(Ledger);
