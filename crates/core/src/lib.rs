//! Pure domain types of memvisor. Nothing here performs I/O, reads a clock or spawns a thread,
//! so every rule can be unit-tested with hand-written values.

pub mod agent;
pub mod api;
pub mod config;
pub mod content;
pub mod entitlement;
pub mod faults;
pub mod hints;
pub mod history;
pub mod ladder;
pub mod plan;
pub mod policy;
pub mod reservation;
pub mod sharing;
pub mod size;
pub mod snapshot;
pub mod status;
pub mod translation;
pub mod working_set;
pub mod workload;

pub use size::Size;
