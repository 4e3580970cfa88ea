//! server: under construction.
