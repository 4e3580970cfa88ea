//! raft: under construction.
