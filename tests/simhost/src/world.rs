//! The world outside the guest: whatever answers its HTTP requests and WebSockets and sends it
//! requests and frames. A scenario plugs in the fakes of Microsoft 365 and the PBX here; tests
//! may plug in something smaller.

use crate::bindings::{HttpError, HttpRequest, HttpResponse, InboundRequest, WsFrame, WsOpen};

/// Hands out the ids the contract says the host owns (inbound requests, WebSockets), so the
/// world and the simulator never disagree about them.
#[derive(Debug, Default)]
pub struct Ids {
    next: u64,
}

impl Ids {
    /// A fresh id, never reused within a run.
    pub fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// Something the world does to the guest.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// An inbound HTTP request; the guest's answer comes back through [`World::respond`].
    HttpRequest(u64, InboundRequest),
    /// The completion of a request the guest started (see [`World::http_start`]).
    HttpResponse(u64, Result<HttpResponse, HttpError>),
    /// A WebSocket opened: inbound (the world dialled the guest) or the outcome of
    /// [`World::ws_connect`].
    WsOpen(WsOpen),
    /// A frame on an open WebSocket.
    WsMessage(u64, WsFrame),
    /// A WebSocket closed from the world's side (or an outbound connect failed).
    WsClosed(u64, u16, String),
}

/// The outside world as the simulator sees it. All calls happen at virtual time `now`
/// (milliseconds); the world answers later through [`World::poll`], at the times it announces
/// with [`World::next_wakeup`].
pub trait World {
    /// The guest started an outbound request with id `id`.
    fn http_start(&mut self, now: u64, id: u64, req: HttpRequest);

    /// The guest abandoned request `id`; the world must not complete it any more.
    fn http_cancel(&mut self, now: u64, id: u64);

    /// The guest answered inbound request `id`.
    fn respond(&mut self, now: u64, id: u64, resp: HttpResponse);

    /// The guest dials `url`; answer with `Incoming::WsOpen` (direction outbound) or
    /// `Incoming::WsClosed` for id `id`.
    fn ws_connect(&mut self, now: u64, id: u64, url: String);

    /// The guest sent a frame.
    fn ws_send(&mut self, now: u64, id: u64, frame: WsFrame);

    /// The guest closed a connection.
    fn ws_close(&mut self, now: u64, id: u64, code: u16, reason: String);

    /// The earliest time at which the world has something to do, if any.
    fn next_wakeup(&self) -> Option<u64>;

    /// Everything the world does to the guest at `now`, in order.
    fn poll(&mut self, now: u64, ids: &mut Ids) -> Vec<Incoming>;
}
