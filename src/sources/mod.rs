//! Sources: one module per system. Each maps its system's changes into the envelope and
//! implements [`crate::source::Source`].

pub mod dynamodb;
pub mod generator;
pub mod mysql;
pub mod postgres;
