//! Message decoding in the guest SDK: arbitrary init args and call bytes
//! through the same glue `export!` generates. A message that does not decode
//! must become a `bad_message` reply (or an init error), never a panic, and
//! every reply must be JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use wasmvisor_sdk::__private::{handle_call, init};
use wasmvisor_sdk::Plugin;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[allow(dead_code)]
    name: String,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    State,
    Add(i64),
    Observe(serde_json::Value),
    Transfer { from: String, to: String, amount: u64 },
    Batch(Vec<Call>),
}

#[derive(Default)]
struct Fuzzed {
    count: i64,
    limit: u32,
    seen: Vec<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Count(i64),
    Seen(usize),
    Many(Vec<Reply>),
}

impl Fuzzed {
    fn apply(&mut self, msg: Call) -> Reply {
        match msg {
            Call::State => Reply::Count(self.count),
            Call::Add(n) => {
                self.count = self.count.saturating_add(n);
                Reply::Count(self.count)
            }
            Call::Observe(v) => {
                if self.seen.len() < self.limit as usize {
                    self.seen.push(v);
                }
                Reply::Seen(self.seen.len())
            }
            Call::Transfer { amount, .. } => {
                self.count = self.count.saturating_sub(amount.min(i64::MAX as u64) as i64);
                Reply::Count(self.count)
            }
            Call::Batch(calls) => Reply::Many(calls.into_iter().map(|c| self.apply(c)).collect()),
        }
    }
}

impl Plugin for Fuzzed {
    type Args = Args;
    type Call = Call;
    type Reply = Reply;
    type Cast = Call;

    fn init(&mut self, args: Args) -> Result<(), String> {
        self.limit = args.limit.unwrap_or(16).min(1024);
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> Reply {
        self.apply(msg)
    }
}

thread_local! {
    // What `export!` declares for a plugin; `init` fills it anew each run.
    static SLOT: RefCell<Option<Fuzzed>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into init args and one call.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = (split as usize).min(rest.len());
    let (args, call) = rest.split_at(split);
    let slot = &SLOT;
    let args = if init(slot, args.to_vec()).is_ok() {
        args.to_vec()
    } else {
        // Calls must also decode after a valid init.
        let valid = br#"{"name": "fuzz"}"#.to_vec();
        init(slot, valid.clone()).expect("valid args initialise");
        valid
    };
    let reply = handle_call(slot, call.to_vec());
    let reply: serde_json::Value = serde_json::from_slice(&reply)
        .unwrap_or_else(|e| panic!("reply to {call:?} (args {args:?}) is not JSON: {e}"));
    if let Some(error) = reply.get("error") {
        assert_eq!(error, "bad_message", "{reply}");
    }
});
