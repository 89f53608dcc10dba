//! Object ids: BLAKE3-256 of an object's uncompressed canonical bytes.
//!
//! `Id` is the raw hash the store deals in; the typed wrappers say which kind
//! of object an id names, so a chunk id can never be passed where a commit id
//! is expected.

use std::fmt;

/// Length of an id in bytes.
pub const ID_LEN: usize = 32;

/// A BLAKE3-256 hash naming one stored object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Id> {
        Some(Id(bytes.try_into().ok()?))
    }

    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The short form shown to users, like git's abbreviated ids.
    pub(crate) fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }

    pub(crate) fn from_hex(text: &str) -> Option<Id> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// In reports and the socket API, an id is its 64 hex digits.
impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&hex).ok_or_else(|| serde::de::Error::custom("not an id of 64 hex digits"))
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            pub fn id(&self) -> Id {
                self.0
            }
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

typed_id!(
    /// A chunk of file content.
    ChunkId
);
typed_id!(
    /// A node of a file's chunk tree.
    NodeId
);
typed_id!(
    /// The root node of a directory tree.
    TreeId
);
typed_id!(
    /// A subdot root: subdot name -> directory tree.
    RootId
);
typed_id!(
    /// A commit.
    CommitId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = Id::of(b"hello");
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 12);
        assert_eq!(Id::from_hex("zz"), None);
    }

    #[test]
    fn golden_blake3() {
        // BLAKE3 of the empty input, from the BLAKE3 reference vectors.
        assert_eq!(
            Id::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
