//! Identifier newtypes. Each is validated once, when built, and trusted afterwards.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValidationError;

/// Longest workspace, project or run id, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn check_id(kind: &str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new("", format!("{kind} id is empty")));
    }
    if s.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            "",
            format!("{kind} id is {} bytes long, at most {MAX_ID_LEN} are allowed", s.len()),
        ));
    }
    let first = s.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(ValidationError::new(
            "",
            format!("{kind} id {s:?} must start with a letter or digit"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValidationError::new(
            "",
            format!("{kind} id {s:?} holds {c:?}; only letters, digits, '.', '_' and '-' are allowed"),
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
                let s = s.into();
                check_id($kind, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    };
}

id_type!(
    /// A workspace: the unit of an organisation that owns projects and tokens.
    WorkspaceId,
    "workspace"
);
id_type!(
    /// A project inside a workspace; every run, read and quota belongs to one.
    ProjectId,
    "project"
);
id_type!(
    /// A run, named by the client (the Python client uses a random UUID).
    RunId,
    "run"
);

/// A client-generated 128-bit event id: the idempotency key of the event. Written in JSON as a
/// UUID (hyphenated or 32 hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let id = uuid::Uuid::try_parse(s)
            .map_err(|_| ValidationError::new("", format!("{s:?} is not a UUID or 32 hex digits")))?;
        Self::from_u128(id.as_u128())
    }

    pub fn from_u128(v: u128) -> Result<Self, ValidationError> {
        if v == 0 {
            return Err(ValidationError::new("", "event id must not be zero"));
        }
        Ok(Self(v))
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, ValidationError> {
        let arr: [u8; 16] = b
            .try_into()
            .map_err(|_| ValidationError::new("", format!("event id has {} bytes, 16 are needed", b.len())))?;
        Self::from_u128(u128::from_be_bytes(arr))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// A fresh random id, for events the server itself writes (registry bootstrap).
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet_only() {
        assert!(RunId::new("run-1.a_B").is_ok());
        assert!(RunId::new("").is_err());
        assert!(RunId::new("-lead").is_err());
        assert!(RunId::new("has space").is_err());
        assert!(RunId::new("x".repeat(129)).is_err());
        assert!(ProjectId::new("a/b").is_err());
    }

    #[test]
    fn event_ids_round_trip_and_reject_zero() {
        let id = EventId::parse("0190f3a2-7b1c-7cde-8f00-0123456789ab").unwrap();
        assert_eq!(EventId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(EventId::from_bytes(&id.to_bytes()).unwrap(), id);
        assert!(EventId::parse("00000000000000000000000000000000").is_err());
        assert!(EventId::parse("nope").is_err());
        assert!(EventId::from_bytes(&[1, 2, 3]).is_err());
    }
}
