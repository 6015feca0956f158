//! The routes, one module per resource.

pub mod audit;
pub mod dlq;
pub mod health;
pub mod leads;
pub mod status;
pub mod webhooks;
