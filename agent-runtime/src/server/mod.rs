//! The server: HTTP application, serving loop, process models.

pub mod http;
pub mod inherit;
pub mod prefork;
pub mod process;
pub mod reload;
pub mod serve;
pub mod supervisor;
