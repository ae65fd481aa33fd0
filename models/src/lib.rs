//! The model families of lambda-ml and how they are measured: what the batch layer trains and every layer predicts
//! with ([`model::Model`]: linear models, tree ensembles, naive Bayes), the speed layer's online learners
//! ([`online`]: the adaptive linear update, Hoeffding trees, the adaptive random forest, online naive Bayes), the
//! metrics, the windows and drift detectors that measure decay ([`prequential`], [`drift`]), the live blend
//! ([`blend`]) and the input's quality that freezes the updates ([`quality`]).

pub mod bayes;
pub mod blend;
pub mod drift;
pub mod hoeffding;
pub mod metrics;
pub mod model;
pub mod online;
pub mod online_bayes;
pub mod prequential;
pub mod quality;
#[cfg(test)]
mod testing;
pub mod tracking;
pub mod trees;

pub use lambda_core::{Error, Result};
