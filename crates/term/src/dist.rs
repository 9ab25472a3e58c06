//! The distribution header: to come.
