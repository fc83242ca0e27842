//! `mentions_sync`: polls a remote API for one client's mentions and
//! publishes each new one once. Start it as `temporary`, one per client.
//!
//! Args: `{"url": U, "interval_ms": N, "owner": ID}`.
//!
//! Every `interval_ms` it GETs U, which answers a JSON array of
//! `{"id": ..., "body": ...}`; each item whose id it has not seen before is
//! published on topic `mentions:<owner>`. It monitors its owner and stops
//! (`normal`) when the owner goes down. A failed poll (the host denied the
//! destination, the server is down, the body is not JSON) is logged and
//! retried at the next interval.
//!
//! | message (call) | reply                                   |
//! |----------------|-----------------------------------------|
//! | `"seen"`       | how many distinct ids it has published  |
//! | `"poll"`       | polls now; the number of new items, or `{"error": ...}` |
//!
//! Outbound HTTP needs the destination in the plugin's `allowed_hosts`:
//! ```toml
//! [plugins.mentions_sync]
//! allowed_hosts = ["api.example.com", "127.0.0.1:8080"]
//! ```

use serde::Deserialize;
use std::collections::HashSet;
use wasmvisor_sdk::{ExitReason, Info, Level, Plugin, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    url: String,
    interval_ms: u64,
    owner: String,
}

#[derive(Deserialize)]
struct Mention {
    id: serde_json::Value,
    #[serde(default)]
    body: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    Seen,
    Poll,
}

#[derive(Default)]
struct MentionsSync {
    url: String,
    interval_ms: u64,
    owner: String,
    topic: String,
    seen: HashSet<String>,
}

impl MentionsSync {
    /// One poll: the number of new mentions published.
    fn poll(&mut self) -> Result<usize, String> {
        let response = wasmvisor_sdk::http::get(&self.url).map_err(|e| e.to_string())?;
        if !(200..300).contains(&response.status) {
            return Err(format!("{} answered {}", self.url, response.status));
        }
        let items: Vec<Mention> = response
            .json()
            .map_err(|e| format!("{} did not answer a list of mentions: {e}", self.url))?;
        let mut new = 0;
        for item in items {
            // Ids may be numbers or strings; their JSON text is the key.
            if self.seen.insert(item.id.to_string()) {
                wasmvisor_sdk::publish(&self.topic, &json!({"id": item.id, "body": item.body}));
                new += 1;
            }
        }
        Ok(new)
    }
}

impl Plugin for MentionsSync {
    type Args = Args;
    type Call = Call;
    type Reply = serde_json::Value;
    type Cast = Call;

    fn init(&mut self, args: Args) -> Result<(), String> {
        if args.interval_ms == 0 {
            return Err("interval_ms must be at least 1".into());
        }
        if args.owner.is_empty() {
            return Err("owner must not be empty".into());
        }
        self.topic = format!("mentions:{}", args.owner);
        self.url = args.url;
        self.interval_ms = args.interval_ms;
        self.owner = args.owner;
        wasmvisor_sdk::monitor(&self.owner);
        // The first poll runs right after init, not inside it.
        wasmvisor_sdk::send_after(0, &"poll");
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> serde_json::Value {
        match msg {
            Call::Seen => json!(self.seen.len()),
            Call::Poll => match self.poll() {
                Ok(n) => json!(n),
                Err(e) => json!({"error": e}),
            },
        }
    }

    fn handle_info(&mut self, info: Info) {
        match info {
            Info::Timer(_) => {
                if let Err(e) = self.poll() {
                    wasmvisor_sdk::log(Level::Warn, &format!("poll failed: {e}"));
                }
                wasmvisor_sdk::send_after(self.interval_ms, &"poll");
            }
            Info::Down { id, .. } if id == self.owner => {
                wasmvisor_sdk::stop(ExitReason::Normal);
            }
            _ => {}
        }
    }
}

wasmvisor_sdk::export!(MentionsSync);
