//! HTTP plumbing shared by the ingest and query services: the one mapping from errors to HTTP
//! statuses, bearer-token authentication against the in-memory registry, and position tokens
//! (how a write's log position travels to a read that wants to see it).

mod auth;
mod error;
mod extract;
mod position;

pub use auth::{Authenticated, RegistryState};
pub use error::{ApiError, parse_json};
pub use extract::UrlPath;
pub use position::PositionToken;
