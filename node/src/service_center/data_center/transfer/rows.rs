//! The rows of a dump: one struct per table, whose fields are the table's
//! columns (SQLite's schema version 6, PostgreSQL's version 1), typed as
//! PostgreSQL stores them. An unknown field is refused: it would be data
//! that an import drops.

use std::fmt::Write as _;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Table;

/// One row, tagged by its table (`"table":"users"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum Row {
    Users(User),
    Sessions(Session),
    Assertions(Assertion),
    Groups(Group),
    Members(Member),
    Messages(Message),
    Accepted(Accepted),
    SequencedKeys(SequencedKey),
    Outbox(OutboxItem),
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Users(_) => Table::Users,
            Row::Sessions(_) => Table::Sessions,
            Row::Assertions(_) => Table::Assertions,
            Row::Groups(_) => Table::Groups,
            Row::Members(_) => Table::Members,
            Row::Messages(_) => Table::Messages,
            Row::Accepted(_) => Table::Accepted,
            Row::SequencedKeys(_) => Table::SequencedKeys,
            Row::Outbox(_) => Table::Outbox,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub password_hash: String,
    pub attached_region: String,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub id: i64,
    pub access_hash: Hex,
    pub refresh_hash: Hex,
    pub user_id: String,
    pub expires_at_ms: i64,
    pub refresh_expires_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub user_id: String,
    pub assertion: Hex,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub title: String,
    pub announcement: String,
    pub open: bool,
    pub max_members: i32,
    pub last_seq: i64,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub group_id: String,
    pub user_id: String,
    pub role: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub group_id: String,
    pub seq: i64,
    pub message_id: String,
    pub sender: String,
    pub body: String,
    pub sent_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    pub message_id: String,
    pub group_id: String,
    pub sender: String,
    pub idempotency_key: Option<String>,
    pub accepted_at_ms: i64,
    /// An encoded `meridian.peer.v1.Verdict`, once the home answered.
    pub verdict: Option<Hex>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequencedKey {
    pub group_id: String,
    pub sender: String,
    pub idempotency_key: String,
    pub message_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxItem {
    /// Kept: a destination's items leave in the order of their ids.
    pub id: i64,
    pub destination: String,
    /// An encoded `meridian.peer.v1.Item`.
    pub item: Hex,
    pub created_at_ms: i64,
    pub traceparent: Option<String>,
}

/// Bytes, written as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(self.0.len() * 2);
        for byte in &self.0 {
            let _ = write!(text, "{byte:02x}");
        }
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode_hex(&text).map(Hex).map_err(serde::de::Error::custom)
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex of odd length {}", text.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", c as char)),
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_as_hex() {
        let row = Row::Sessions(Session {
            id: 7,
            access_hash: Hex(vec![0x00, 0xab, 0xff]),
            refresh_hash: Hex(vec![]),
            user_id: "ann@eu".into(),
            expires_at_ms: 1,
            refresh_expires_at_ms: 2,
        });
        let line = serde_json::to_string(&row).unwrap();
        assert!(line.starts_with(r#"{"table":"sessions","id":7,"access_hash":"00abff""#));
        assert_eq!(serde_json::from_str::<Row>(&line).unwrap(), row);
        assert_eq!(row.table(), Table::Sessions);
    }

    #[test]
    fn bad_hex_and_unknown_fields_are_refused() {
        let bad = |line: &str| serde_json::from_str::<Row>(line).unwrap_err().to_string();
        let message =
            bad(r#"{"table":"assertions","user_id":"a","assertion":"0g","expires_at_ms":1}"#);
        assert!(message.contains("'g' is not a hex digit"), "{message}");
        let message =
            bad(r#"{"table":"assertions","user_id":"a","assertion":"abc","expires_at_ms":1}"#);
        assert!(message.contains("odd length"), "{message}");
        let message =
            bad(r#"{"table":"members","group_id":"g","user_id":"u","role":1,"since_ms":5}"#);
        assert!(message.contains("unknown field `since_ms`"), "{message}");
        let message = bad(r#"{"table":"members","group_id":"g","user_id":"u"}"#);
        assert!(message.contains("missing field `role`"), "{message}");
    }
}
