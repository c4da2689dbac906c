//! Native mirrors of the WIT `types` interface: what the host delivers (`Event`) and the
//! records the guest hands back (requests, responses, frames).
//!
//! They are plain Rust types so that the core compiles and is tested without wasm; the wasm glue
//! converts between these and the wit-bindgen types field by field.

/// A request started with `http-client.start`.
pub type RequestId = u64;
/// An inbound HTTP request, answered with `http-server.respond`.
pub type InboundId = u64;
/// A WebSocket connection owned by the host.
pub type WsId = u64;
/// A timer set with `timers.set`.
pub type TimerId = u64;

/// One HTTP header (name compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

impl Header {
    /// Builds a header from two strings.
    pub fn new(name: &str, value: &str) -> Self {
        Header {
            name: name.to_string(),
            value: value.to_string(),
        }
    }
}

/// Finds a header value by case-insensitive name.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// An outgoing HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method in upper case.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<Header>,
    /// Request body.
    pub body: Vec<u8>,
    /// Timeout in milliseconds.
    pub timeout_ms: u32,
}

/// An HTTP response (received or sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<Header>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON response with the given status.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        HttpResponse {
            status,
            headers: vec![Header::new("content-type", "application/json")],
            body: body.to_string().into_bytes(),
        }
    }

    /// A plain-text response with the given status.
    pub fn text(status: u16, body: &str) -> Self {
        HttpResponse {
            status,
            headers: vec![Header::new("content-type", "text/plain; charset=utf-8")],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// Why an outgoing request failed without a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No complete response within the timeout.
    Timeout,
    /// Destination not on the allow-list.
    Denied(String),
    /// DNS, TCP connect or reset.
    Connection(String),
    /// TLS failure.
    Tls(String),
    /// Response body too large.
    TooLarge,
    /// The request was malformed.
    Invalid(String),
}

/// An inbound HTTP request routed to this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRequest {
    /// Method in upper case.
    pub method: String,
    /// Path below the instance prefix, starting with `/`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Request headers.
    pub headers: Vec<Header>,
    /// Request body.
    pub body: Vec<u8>,
    /// Peer address `ip:port`.
    pub peer: String,
}

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// Who opened a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsDirection {
    /// A client connected to the host's listener (the PBX, a browser).
    Inbound,
    /// The guest dialled it with `websocket.connect`.
    Outbound,
}

/// A WebSocket connection is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOpen {
    /// Connection id.
    pub id: WsId,
    /// Inbound or outbound.
    pub direction: WsDirection,
    /// Path below the instance prefix (inbound) or dialled URL (outbound).
    pub path: String,
    /// Upgrade request or handshake response headers.
    pub headers: Vec<Header>,
    /// Peer address.
    pub peer: String,
}

/// A WebSocket connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClosed {
    /// Connection id.
    pub id: WsId,
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// Why the guest is being initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitReason {
    /// Host start or instance added.
    Start,
    /// A previous instance trapped.
    Restart,
    /// Hot swap from an earlier guest version.
    Upgrade,
}

/// The first event of every guest instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitInfo {
    /// Why.
    pub reason: InitReason,
    /// Previous guest version on upgrade.
    pub from_version: Option<String>,
    /// Previous guest's snapshot on upgrade.
    pub snapshot: Option<Vec<u8>>,
    /// WebSocket connections still open.
    pub open_websockets: Vec<WsOpen>,
}

/// Something the guest handles; mirrors the WIT `event` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The instance was (re)created.
    Init(InitInfo),
    /// An inbound HTTP request.
    HttpRequest(InboundId, InboundRequest),
    /// An outgoing request completed.
    HttpResponse(RequestId, Result<HttpResponse, HttpError>),
    /// A WebSocket connection opened.
    WsOpen(WsOpen),
    /// A message on a WebSocket connection.
    WsMessage(WsId, WsFrame),
    /// A WebSocket connection closed.
    WsClosed(WsClosed),
    /// A timer fired, with its tag.
    Timer(TimerId, String),
}

impl Event {
    /// Short name of the event kind, used for statistics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Init(_) => "init",
            Event::HttpRequest(..) => "http-request",
            Event::HttpResponse(..) => "http-response",
            Event::WsOpen(_) => "ws-open",
            Event::WsMessage(..) => "ws-message",
            Event::WsClosed(_) => "ws-closed",
            Event::Timer(..) => "timer",
        }
    }
}
