//! Findings of `cdc-bridge check`: what a connector verified about its prerequisites.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One verified prerequisite, or one that is missing and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

impl Finding {
    pub fn ok(message: impl Into<String>) -> Self {
        Finding {
            level: Level::Ok,
            message: message.into(),
        }
    }

    pub fn warn(message: impl Into<String>) -> Self {
        Finding {
            level: Level::Warn,
            message: message.into(),
        }
    }

    pub fn fail(message: impl Into<String>) -> Self {
        Finding {
            level: Level::Fail,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.message)
    }
}
