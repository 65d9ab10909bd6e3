//! Benchmarks that print figures. Speed and memory targets are measured here, on demand, and
//! not in timed tests: the machines are shared and noisy.

pub mod cluster;
pub mod controls;
pub mod emulator;
pub mod gateway;
pub mod history;
mod nginx;
