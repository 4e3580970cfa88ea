//! net: under construction.
