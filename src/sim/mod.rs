//! sim: under construction.
