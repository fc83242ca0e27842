//! `board_monitor`: who is connected to a board, one instance per board.
//!
//! Args: `{"board_id": "..."}`.
//!
//! | message (call)        | reply                                  |
//! |-----------------------|----------------------------------------|
//! | `{"user_joined": U}`  | the sorted, de-duplicated list of users |
//! | `{"user_left": U}`    | the same list after U left             |
//! | `"users"`             | the same list                          |
//! | `"board"`             | the board id                           |
//!
//! Users are strings. The user list is carried across a hot reload.

use serde::Deserialize;
use std::collections::BTreeSet;
use wasmvisor_sdk::{Message, Plugin};

#[derive(Default)]
struct BoardMonitor {
    board_id: String,
    users: BTreeSet<String>,
}

#[derive(Deserialize)]
struct Args {
    board_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    UserJoined(String),
    UserLeft(String),
    Users,
    Board,
}

impl Plugin for BoardMonitor {
    type Args = Args;
    type Call = Call;
    type Reply = serde_json::Value;
    type Cast = Call;

    fn init(&mut self, args: Args) -> Result<(), String> {
        if args.board_id.is_empty() {
            return Err("board_id must not be empty".into());
        }
        self.board_id = args.board_id;
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> serde_json::Value {
        if let Call::Board = msg {
            return self.board_id.clone().into();
        }
        self.apply(msg);
        self.users.iter().cloned().collect::<Vec<_>>().into()
    }

    fn handle_cast(&mut self, msg: Call) {
        self.apply(msg);
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(&self.users))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        self.users = state.decode().map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl BoardMonitor {
    fn apply(&mut self, msg: Call) {
        match msg {
            Call::UserJoined(u) => {
                self.users.insert(u);
            }
            Call::UserLeft(u) => {
                self.users.remove(&u);
            }
            Call::Users | Call::Board => {}
        }
    }
}

wasmvisor_sdk::export!(BoardMonitor);
