//! Helpers the distribution tests share.
#![allow(dead_code)]

pub(crate) mod ember;
pub(crate) mod wire;
