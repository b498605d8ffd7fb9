//! Sinks: one module per destination. Each formats events and implements
//! [`crate::sink::Sink`].

pub mod file;
pub mod kafka;
pub mod kinesis;
pub mod null;
pub mod oversize;
pub mod stdout;
