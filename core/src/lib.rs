//! What every lambda-ml layer shares.
//!
//! A pipeline is declared once in a [`spec::Spec`] (TOML). From it come the [`schema`] every event and every
//! master-dataset row is checked against, the [`encoder::Encoder`] fitted by the batch layer and applied by all three
//! layers through one code path, the [`model::Model`] families trained in batch (the [`model::LinearModel`] one also updated online), the
//! [`registry`] that publishes versioned models atomically, and the per-key [`views`] that merge as monoids.
//!
//! Data flow: the batch layer reads [`schema::Columns`] from Parquet, fits an encoder and a model, and publishes a
//! [`registry::ModelArtifact`] plus a batch [`views::ViewTable`]. The speed layer parses [`schema::Event`]s, encodes
//! them with the same encoder, updates the model by SGD and folds them into realtime views. The serving layer merges
//! both.

pub mod bayes;
pub mod blend;
pub mod checkpoint;
pub mod drift;
pub mod encoder;
pub mod error;
pub mod hoeffding;
pub mod lock;
pub mod master;
pub mod metrics;
pub mod model;
pub mod names;
pub mod online;
pub mod online_bayes;
pub mod prequential;
pub mod publish;
pub mod quality;
pub mod realtime;
pub mod registry;
pub mod rejection;
pub mod schema;
pub mod spec;
pub mod state;
#[cfg(test)]
mod testing;
pub mod time;
pub mod trees;
pub mod views;

pub use error::{Error, Result};
