//! Sensors and actuators on the host. Each module is a thin adapter over one kernel interface;
//! the parsing in each is pure and unit-tested on fixture text.

pub mod cgroup;
pub mod damon;
pub mod ksm;
pub mod meminfo;
pub mod pagemap;
pub mod pressure;
pub mod process;
pub mod swap;
