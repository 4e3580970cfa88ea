//! client: under construction.
