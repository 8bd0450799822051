//! chorus: a chat server that scales out.
//!
//! A node is built by [`app::App`] from [`config::Settings`]. WebSocket
//! sessions ([`ws`]) and REST handlers ([`http`]) speak the wire formats of
//! [`protocol`] and call the operations of [`chat`], which combine the
//! node-local fan-out of [`hub`] with the backend roles of [`cluster`]
//! (`Bus`, `Presence`, `Liveness`, `History`), kept in memory for one node or
//! in Redis for a cluster. [`error_code`] is the one table of error codes both
//! front ends answer with, [`api_error`] their HTTP error answer and
//! [`state`] what their handlers share; a private `routes` mounts the two
//! side by side. [`domain`] holds the validated names and ids every layer
//! shares; [`telemetry`] the logs and metrics; [`shutdown`] the drain;
//! [`upkeep`] the presence heartbeat and the reaper of dead nodes.

mod admission;
pub mod api_error;
pub mod app;
pub mod archive;
pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error_code;
pub mod http;
pub mod hub;
pub mod origins;
pub mod protocol;
mod rate;
mod routes;
mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod upkeep;
pub mod uploads;
mod ws;
