//! verify: todo
