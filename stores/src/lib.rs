//! What lambda-ml keeps on disk and how it is made durable: every sync, by the name of its site ([`durable`]),
//! framed, checksummed state files and synced writes ([`state`]), versioned folders behind an atomic pointer ([`publish`], [`registry`]), folder locks ([`lock`]),
//! the master dataset's Parquet files ([`master`]), the per-key views ([`views`], [`realtime`]) and the speed
//! layer's checkpoint formats and readers, with the served pair ([`checkpoint`]; the speed layer writes it).

pub mod checkpoint;
pub mod durable;
pub mod lock;
pub mod master;
pub mod publish;
pub mod realtime;
pub mod registry;
pub mod state;
#[doc(hidden)]
pub mod testing;
pub mod views;

pub use lambda_core::{Error, Result};
