//! wire: under construction.
