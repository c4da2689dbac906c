//! The task behind one open WebSocket (inbound or outbound): frames in become events, frames
//! queued by committed events go out, and the end of the connection becomes `ws-closed`.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::bindings::{Event, WsClosed, WsFrame, WsOpen};
use crate::instance::{InstanceContext, WsHandle};

/// What committed events ask a connection to do.
#[derive(Debug)]
pub enum WsCommand {
    /// Send a text frame.
    Text(String),
    /// Send a binary frame.
    Binary(Vec<u8>),
    /// Close with code and reason (the guest asked: no `ws-closed` event).
    Close(u16, String),
}

/// Registers the connection, announces it with `ws-open`, then pumps it until it ends.
pub async fn run<S>(ctx: Arc<InstanceContext>, open: WsOpen, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = open.id;
    let (commands, mut queue) = mpsc::unbounded_channel();
    ctx.websockets.lock().expect("websockets").insert(
        id,
        WsHandle {
            commands,
            open: open.clone(),
        },
    );
    ctx.deliver(Event::WsOpen(open));
    let (mut sink, mut stream) = ws.split();
    let (code, reason) = loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    ctx.deliver(Event::WsMessage((id, WsFrame::Text(text.to_string()))));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    ctx.deliver(Event::WsMessage((id, WsFrame::Binary(bytes.to_vec()))));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    let _ = sink.close().await;
                    break (code, reason);
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => {
                    // Malformed input: tell the peer why and drop the connection.
                    let frame = CloseFrame { code: CloseCode::Protocol, reason: "protocol error".into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    tracing::debug!(instance = %ctx.config.name, id, error = %e, "websocket protocol error");
                    break (1002, e.to_string());
                }
                None => break (1006, "connection dropped".to_string()),
            },
            command = queue.recv() => match command {
                Some(WsCommand::Text(t)) => {
                    if let Err(e) = sink.send(Message::text(t)).await {
                        break (1006, e.to_string());
                    }
                }
                Some(WsCommand::Binary(b)) => {
                    if let Err(e) = sink.send(Message::binary(b)).await {
                        break (1006, e.to_string());
                    }
                }
                Some(WsCommand::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                    return;
                }
                None => return,
            },
        }
    };
    let registered = ctx
        .websockets
        .lock()
        .expect("websockets")
        .remove(&id)
        .is_some();
    if registered {
        ctx.deliver(Event::WsClosed(WsClosed { id, code, reason }));
    }
}
