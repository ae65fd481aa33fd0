//! The batch layer: reading histories written by other tools, the search, the gate, the views against oracles.
//! One test binary, so that polars and arrow are linked once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bad_history;
mod common;
mod gate;
mod history;
mod oracles;
mod search;
mod view;
mod writers;
