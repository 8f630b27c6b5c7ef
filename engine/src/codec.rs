//! Generated code format (being written).
