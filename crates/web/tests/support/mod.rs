//! The HTTP test client (`ember_testkit::http`), under the name the tests
//! use.

#![allow(unused_imports, unreachable_pub)]

pub use ember_testkit::http::*;
