//! The routes, one module per resource.

pub mod health;
pub mod leads;
pub mod status;
