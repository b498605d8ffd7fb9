//! Sinks: one module per destination. Each formats events and implements
//! [`crate::sink::Sink`].

pub mod file;
pub mod null;
pub mod stdout;
