//! End-to-end tests: the real gateway (in-process on 127.0.0.1:0, or the real
//! binary) against the vendor simulators, over real HTTP, asserting the contract
//! of API.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc, clippy::must_use_candidate)]

mod auth;
mod breaker;
mod cache;
mod commbox;
mod common;
mod config;
mod connections;
mod contract;
mod declared;
mod demo;
mod drain;
mod elevateai;
mod errors;
mod examples;
mod lifecycle;
mod logs;
mod metrics;
mod observability;
mod openapi;
mod otlp;
mod quota;
mod redis_cluster;
mod redis_secure;
mod redis_sentinel;
mod redis_support;
mod reload;
mod replicas;
mod schemathesis;
mod ssrf;
mod vendor_codes;
mod vendor_memory;
mod yeastar;
