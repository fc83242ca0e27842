//! `board_monitor`: who is connected to a board, one instance per board.
//!
//! Args: `{"board_id": "..."}`.
//!
//! | message (call)        | reply                                   |
//! |-----------------------|-----------------------------------------|
//! | `{"user_joined": U}`  | the sorted, de-duplicated list of users |
//! | `{"user_left": U}`    | the same list after U left              |
//! | `"users"`             | the same list                           |
//! | `"board"`             | the board id                            |
//!
//! Casts of `{"user_joined": U}` and `{"user_left": U}` do the same without
//! a reply.
//!
//! A user id U is what the app has: a JSON integer (a Phoenix app's user ids)
//! or a JSON string.
//!
//! | user ids      | rule |
//! |---------------|------|
//! | accepted      | a JSON integer (any that fits `i64` or `u64`) or a JSON string |
//! | anything else | a float (even `1.0`), an object, a list, `null`, `true`: the call is answered `{"error": "bad_message", ...}` and changes nothing; such a cast is logged and dropped |
//! | in replies    | each id keeps its JSON type: joining `1` and `3` gives `[1, 3]`, joining `"a"` gives `["a"]` |
//! | `1` and `"1"` | two different users: both can be on the board, and one leaving leaves the other there |
//! | order         | integers first, in numeric order, then strings, in byte order: `[2, 10, "10", "2", "adam"]` |
//!
//! The board id and the user list, each id with its type, are carried
//! across a hot reload.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use wasmvisor_sdk::{Message, Plugin};

/// A user id as the app sent it. The derived order is the documented one:
/// every integer before every string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum UserId {
    /// A JSON integer; `i128` holds every one that JSON decoding yields
    /// (`i64` and `u64` alike), in numeric order.
    Int(i128),
    /// A JSON string.
    Str(String),
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            UserId::Int(n) => serializer.serialize_i128(*n),
            UserId::Str(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Id;

        impl Visitor<'_> for Id {
            type Value = UserId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user id: an integer or a string")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<UserId, E> {
                Ok(UserId::Int(n.into()))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<UserId, E> {
                Ok(UserId::Int(n.into()))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<UserId, E> {
                Ok(UserId::Str(s.to_owned()))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<UserId, E> {
                Ok(UserId::Str(s))
            }
        }

        deserializer.deserialize_any(Id)
    }
}

#[derive(Default)]
struct BoardMonitor {
    board_id: String,
    users: BTreeSet<UserId>,
}

#[derive(Deserialize)]
struct Args {
    board_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    UserJoined(UserId),
    UserLeft(UserId),
    Users,
    Board,
}

/// What a hot reload carries over.
#[derive(Serialize, Deserialize)]
struct Kept {
    board_id: String,
    users: BTreeSet<UserId>,
}

/// A call's reply: the users, or the board id.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Users(Vec<UserId>),
    Board(String),
}

impl Plugin for BoardMonitor {
    type Args = Args;
    type Call = Call;
    type Reply = Reply;
    type Cast = Call;

    fn init(&mut self, args: Args) -> Result<(), String> {
        if args.board_id.is_empty() {
            return Err("board_id must not be empty".into());
        }
        self.board_id = args.board_id;
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> Reply {
        if let Call::Board = msg {
            return Reply::Board(self.board_id.clone());
        }
        self.apply(msg);
        Reply::Users(self.users.iter().cloned().collect())
    }

    fn handle_cast(&mut self, msg: Call) {
        self.apply(msg);
    }

    fn snapshot(&self) -> Option<Message> {
        Some(Message::encode(&Kept {
            board_id: self.board_id.clone(),
            users: self.users.clone(),
        }))
    }

    fn restore(&mut self, state: Message) -> Result<(), String> {
        let kept: Kept = state.decode().map_err(|e| e.to_string())?;
        (self.board_id, self.users) = (kept.board_id, kept.users);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn board() -> BoardMonitor {
        let mut b = BoardMonitor::default();
        b.init(Args {
            board_id: "b".into(),
        })
        .unwrap();
        b
    }

    fn call(b: &mut BoardMonitor, msg: serde_json::Value) -> serde_json::Value {
        serde_json::to_value(b.handle_call(serde_json::from_value(msg).unwrap())).unwrap()
    }

    #[test]
    fn ids_keep_their_json_type() {
        let mut b = board();
        call(&mut b, json!({"user_joined": 3}));
        assert_eq!(call(&mut b, json!({"user_joined": 1})), json!([1, 3]));
        let mut b = board();
        assert_eq!(call(&mut b, json!({"user_joined": "a"})), json!(["a"]));
    }

    #[test]
    fn one_and_the_string_one_are_two_users() {
        let mut b = board();
        call(&mut b, json!({"user_joined": "1"}));
        assert_eq!(call(&mut b, json!({"user_joined": 1})), json!([1, "1"]));
        assert_eq!(call(&mut b, json!({"user_left": "1"})), json!([1]));
        assert_eq!(call(&mut b, json!({"user_left": 1})), json!([]));
    }

    #[test]
    fn integers_sort_numerically_before_strings() {
        let mut b = board();
        for u in [json!("adam"), json!(10), json!("2"), json!(2), json!("10")] {
            call(&mut b, json!({ "user_joined": u }));
        }
        let max = json!(u64::MAX);
        call(&mut b, json!({ "user_joined": max }));
        call(&mut b, json!({"user_joined": i64::MIN}));
        assert_eq!(
            call(&mut b, json!("users")),
            json!([i64::MIN, 2, 10, u64::MAX, "10", "2", "adam"])
        );
    }

    #[test]
    fn other_ids_do_not_decode() {
        for id in [
            json!(1.5),
            json!({"id": 1}),
            json!([1]),
            json!(null),
            json!(true),
        ] {
            let err = serde_json::from_value::<Call>(json!({ "user_joined": id })).err();
            let err = err.unwrap_or_else(|| panic!("{id} decoded")).to_string();
            assert!(err.contains("an integer or a string"), "{id}: {err}");
        }
    }

    #[test]
    fn the_snapshot_restores_typed_ids() {
        let mut old = board();
        for u in [json!(7), json!("7"), json!("x")] {
            call(&mut old, json!({ "user_joined": u }));
        }
        // A reload that continues the child runs no `init`.
        let mut new = BoardMonitor::default();
        new.restore(old.snapshot().unwrap()).unwrap();
        assert_eq!(call(&mut new, json!("users")), json!([7, "7", "x"]));
        assert_eq!(
            call(&mut new, json!("board")),
            call(&mut old, json!("board"))
        );
    }
}
