//! Messages as they cross the host boundary: bytes that hold JSON by convention.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// An encoded message: the bytes the host passes between instances untouched.
///
/// The SDK encodes and decodes JSON for you; use `Message` directly when you
/// receive something whose type depends on context (a timer, a topic event,
/// a snapshot) or when you want the raw bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message(Vec<u8>);

impl Message {
    /// Encodes `value` as JSON.
    ///
    /// Encoding a value made of plain data (structs, enums, numbers, strings,
    /// maps with string keys) cannot fail; for the rare value that can
    /// (a map with non-string keys) the error is encoded instead, so that the
    /// receiver sees what went wrong rather than an empty message.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Message {
        match serde_json::to_vec(value) {
            Ok(bytes) => Message(bytes),
            Err(e) => Message::error("encode_failed", &e.to_string()),
        }
    }

    /// Decodes the JSON in this message as a `T`. An empty message decodes as
    /// JSON `null`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_bytes(&self.0)
    }

    /// Wraps bytes that are already encoded.
    pub fn from_bytes(bytes: Vec<u8>) -> Message {
        Message(bytes)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The conventional error reply, `{"error": code, "message": text}`.
    pub fn error(code: &str, message: &str) -> Message {
        #[derive(Serialize)]
        struct ErrorReply<'a> {
            error: &'a str,
            message: &'a str,
        }
        // Two string fields always encode.
        Message(
            serde_json::to_vec(&ErrorReply {
                error: code,
                message,
            })
            .unwrap_or_default(),
        )
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "Message({text})"),
            Err(_) => write!(f, "Message({} bytes)", self.0.len()),
        }
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Message {
        Message(bytes)
    }
}

/// A message did not hold the JSON its receiver expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn decode_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_json() {
        let m = Message::encode(&serde_json::json!({"add": 2}));
        assert_eq!(m.as_bytes(), br#"{"add":2}"#);
        let v: serde_json::Value = m.decode().unwrap();
        assert_eq!(v["add"], 2);
    }

    #[test]
    fn empty_decodes_as_null() {
        let v: Option<u32> = Message::default().decode().unwrap();
        assert_eq!(v, None);
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let err = Message::encode("text").decode::<u32>().unwrap_err();
        assert!(err.0.contains("invalid type"), "{err}");
    }

    #[test]
    fn error_reply_shape() {
        let v: serde_json::Value = Message::error("bad_message", "nope").decode().unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "bad_message", "message": "nope"})
        );
    }
}
