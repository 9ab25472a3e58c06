//! The server's settings, with their defaults in one place.

use std::time::Duration;

/// The server's settings. `Config::default()` holds the documented defaults;
/// change fields with struct update syntax:
///
/// ```
/// use std::time::Duration;
/// let config = ember_web::Config {
///     max_connections: 100,
///     header_read_timeout: Duration::from_secs(2),
///     ..ember_web::Config::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Most connections served at once (default 10 000). A connection
    /// accepted beyond it is answered `503 Service Unavailable` (with
    /// `Retry-After: 1` and `Connection: close`) and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's head (request line and headers),
    /// counted from when the server starts waiting for it; this also bounds
    /// how long an idle keep-alive connection stays open (default 10 s). A
    /// client that misses it is disconnected without a response.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body once its head is read
    /// (default 30 s); missing it answers `408 Request Timeout`.
    pub body_read_timeout: Duration,
    /// Largest request body accepted, in bytes (default 1 MiB); a larger
    /// body answers `413 Payload Too Large` (at once when `Content-Length`
    /// announces it, else when the limit is crossed).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers), in bytes (default
    /// 64 KiB); a larger head answers `431 Request Header Fields Too Large`
    /// and closes the connection, however it arrives (in one write or in
    /// pieces).
    pub max_head_bytes: usize,
    /// Longest time a response may make no progress (the client reads
    /// nothing, so the socket's send buffer stays full) before the
    /// connection is closed (default 20 s). Counted only while a write is
    /// blocked: an idle event stream is not affected, a client that reads
    /// slowly but steadily is.
    pub write_timeout: Duration,
    /// Most requests the server takes from a connection's input in one go,
    /// i.e. requests pipelined (sent before the previous responses were
    /// read) and queued in its buffer (default 64). The response to the
    /// request that reaches the cap carries `Connection: close`, the
    /// connection closes after it, and the requests pipelined behind are not
    /// answered (RFC 9112 §9.3.2: the client retries them on a new
    /// connection). A client that sends one request at a time never
    /// reaches it.
    pub max_pipelined: usize,
    /// Whether connections are kept alive between requests (default true).
    pub keep_alive: bool,
    /// On graceful shutdown, how long in-flight requests may take to finish
    /// before their connections are killed (default 10 s).
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            max_head_bytes: 64 * 1024,
            write_timeout: Duration::from_secs(20),
            max_pipelined: 64,
            keep_alive: true,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}
