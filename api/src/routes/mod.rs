//! The routes, one module per resource.

pub mod audit;
pub mod dlq;
pub mod leads;
pub mod security;
pub mod status;
pub mod webhooks;
