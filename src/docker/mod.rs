//! Docker: the volume plugin protocol dockerd speaks to dot, and the
//! Engine API dot speaks to dockerd (docs/design.md 17).

pub mod engine;
pub mod plugin;
