//! The routes, one module per resource.

pub mod audit;
pub mod dlq;
pub mod jobs;
pub mod leads;
pub mod queues;
pub mod security;
pub mod status;
pub mod tenant;
pub mod webhooks;
