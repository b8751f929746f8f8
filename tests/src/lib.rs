//! flowpath integration test support.
