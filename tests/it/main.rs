//! Integration tests: one binary (faster to link), real PostgreSQL and Redis (from
//! `scripts/test`), a fresh database and queue prefix per test.

mod api_auth;
mod api_leads;
mod audit;
mod engine;
mod erase;
mod keys;
mod limits;
mod observability;
mod process;
mod secrets;
mod security;
