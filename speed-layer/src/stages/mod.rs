//! The speed layer's stages, each owning its state behind a narrow interface.

pub(crate) mod dead_letters;
