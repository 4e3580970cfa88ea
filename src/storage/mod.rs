//! storage: under construction.
