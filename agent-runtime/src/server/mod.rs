//! The server: HTTP application, serving loop, process models.

pub mod body;
pub mod extract;
pub mod handlers;
pub mod http;
pub mod inherit;
pub mod limiter;
pub mod prefork;
pub mod process;
pub mod reload;
pub mod serve;
pub mod streams;
pub mod supervisor;
