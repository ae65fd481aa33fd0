//! What every lambda-ml crate shares, and nothing else.
//!
//! A pipeline is declared once in a [`spec::Spec`] (TOML), checked once. From it come the [`schema`] every event
//! and every master-dataset row is checked against (a record refused says why: [`rejection`]), the event [`time`]s
//! as producers send them, and the [`encoder::Encoder`] fitted by the batch layer and applied by all three layers
//! through one code path. The model families live in `lambda-models`, what is kept on disk in `lambda-stores`.

pub mod encoder;
pub mod error;
pub mod names;
pub mod rejection;
pub mod schema;
pub mod spec;
pub mod time;

pub use error::{Error, Result};
