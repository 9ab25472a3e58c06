//! Ember's OTP layer (placeholder docs, replaced below).
#![forbid(unsafe_code)]

pub mod gen;
pub mod gen_server;
pub mod supervisor;
pub mod dynamic_supervisor;
pub mod task;
pub mod pool;
pub mod resource_pool;
pub mod application;
