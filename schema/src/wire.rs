//! Types generated from the .proto file. Private: the rest of the code uses domain types.
#![allow(clippy::all, clippy::pedantic, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/runstream.v1.rs"));
