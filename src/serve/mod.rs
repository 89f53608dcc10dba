//! Serving the library: the requests every `dot` command makes, carried
//! out on the store in this process or by the daemon that owns it
//! (docs/design.md, "Serving"). The CLI builds a request, gets a response,
//! and prints it; nothing here prints.

pub mod api;
pub mod client;
pub mod exec;
pub(crate) mod http;
pub mod mounts;
pub mod plugin;
pub mod server;
