//! Portcullis: an OAuth2 gateway in front of legacy HTTP APIs.
//!
//! The binary (`src/main.rs`) is a thin edge over this library; integration tests drive the
//! same library entry points (`app::Gateway::start`) on ephemeral loopback ports.
//! See ARCHITECTURE.md for the code map and the invariants each module keeps.

pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod exposition;
pub mod gateway;
pub mod guard;
pub mod http;
pub mod import_dot;
pub mod lifecycle;
pub mod listener;
pub mod manage;
pub mod metrics;
pub mod migrate;
pub mod oauth;
pub mod principal;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod request_id;
pub mod route_tools;
pub mod routes;
pub mod scope;
pub mod shutdown;
pub mod store;
pub mod thread_bytes;
pub mod tls;
pub mod web;
