//! The binary as its users run it: every command, the daemons as processes, the services over HTTP with
//! clients no one here wrote. One test binary, so that polars and arrow are linked once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod daemon;
mod end_to_end;
mod families;
mod handoff;
mod kserve;
mod live;
mod metrics;
mod models;
mod nats;
mod openapi;
mod poison;
mod retrain;
