//! dump: todo
