//! runstream's event schema.
//!
//! Protobuf (`proto/runstream/v1/events.proto`) is the wire and log format; the generated types
//! stay private to this crate. Everything else sees the domain types of [`event`], which can only
//! be built through validating conversions, so a value that reached the log is known good. The
//! JSON form of the HTTP API ([`json`]) mirrors the protobuf messages field for field.

mod convert;
mod error;
pub mod event;
pub mod json;
pub mod names;
mod wire;

pub use convert::{
    ClientBytes, WireBatch, decode_batch, decode_registry, encode_batch, encode_batch_reusing, encode_registry,
};
pub use error::{DecodeError, ValidationError};
pub use event::*;
pub use names::{EventId, ProjectId, RunId, WorkspaceId};

/// The schema version new events are written with. Readers accept every version up to it.
pub const SCHEMA_VERSION: u32 = 1;
