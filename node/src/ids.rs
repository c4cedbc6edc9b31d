//! Identities (docs/ARCHITECTURE.md §2): region codes, and user and group ids of
//! the form `name@region`, whose region part is the home.

use std::fmt;

use crate::Error;

pub use meridian_ids::is_region_code;

/// Whether `name` is the name part of a user or group id.
pub fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let rest_ok =
        |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(rest_ok)
}

/// A validated `name@home` id of a user or a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    text: String,
    at: usize,
}

impl Id {
    /// Parses an id; `what` names it in the error ("user", "group").
    pub fn parse(what: &str, text: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::InvalidArgument(format!(
                "{what} id {text:?} is not of the form name@region (name: lowercase letters, \
                 digits, '.', '_' or '-', at most 64; region: a region code)"
            ))
        };
        let at = text.find('@').ok_or_else(invalid)?;
        let (name, region) = (&text[..at], &text[at + 1..]);
        if !is_name(name) || !is_region_code(region) {
            return Err(invalid());
        }
        Ok(Self {
            text: text.to_owned(),
            at,
        })
    }

    /// Builds the id `name@region` from parts already known to be valid.
    pub fn new(what: &str, name: &str, region: &str) -> Result<Self, Error> {
        Self::parse(what, &format!("{name}@{region}"))
    }

    pub fn name(&self) -> &str {
        &self.text[..self.at]
    }

    /// The home region: the region whose data center owns the record.
    pub fn home(&self) -> &str {
        &self.text[self.at + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_into_name_and_home() {
        let id = Id::parse("user", "alice.b_c-1@us-east").unwrap();
        assert_eq!(id.name(), "alice.b_c-1");
        assert_eq!(id.home(), "us-east");
        assert_eq!(id.to_string(), "alice.b_c-1@us-east");
    }

    #[test]
    fn malformed_ids_are_refused_with_the_kind_named() {
        for bad in [
            "alice", "@eu", "alice@", "Alice@eu", "_a@eu", "a@b@eu", "a b@eu", "a@EU",
        ] {
            let err = Id::parse("group", bad).unwrap_err();
            assert!(err.to_string().contains("group id"), "{bad}: {err}");
        }
        assert!(Id::parse("user", &format!("{}@eu", "a".repeat(65))).is_err());
        assert!(Id::parse("user", &format!("{}@eu", "a".repeat(64))).is_ok());
    }
}
