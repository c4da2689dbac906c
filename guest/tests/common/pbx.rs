//! The connector core wired to the fake PBX in-process (shared by `fake_pbx.rs` and
//! `provisioning.rs`): a node of the fake and the pump that shuttles frames both ways.

use fake_pbx::Pbx;
use fake_pbx::login::AppObject;
use fake_pbx::pbx::{NodeConfig, Output, default_apis};
use microsoft365::event::{WsClosed, WsDirection, WsFrame, WsOpen};
use microsoft365::pbx::PbxEvent;
use microsoft365::testenv::TestEnv;
use microsoft365::{Connector, Event};

pub fn node(name: &str, password: &str) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        dns: format!("{name}.example.com"),
        app: AppObject {
            sip: "m365".into(),
            dn: "Microsoft 365 Connector".into(),
            guid: "3954ae7854c96301c9dd009033400109".into(),
            url: "https://ap.example.com/example.com/m365/innovaphone-microsoft365".into(),
            password: password.into(),
            lics: None,
            apps: vec![],
        },
        dial_url: None,
        apis: default_apis(),
        version: "14r2".into(),
        build: "143104".into(),
    }
}

/// Shuttles frames until both sides are quiet; returns connector-side PBX events.
pub fn pump(pbx: &mut Pbx, c: &mut Connector, env: &mut TestEnv) -> Vec<PbxEvent> {
    let mut events = Vec::new();
    for _ in 0..1_000_000 {
        let outs = pbx.drain();
        let mut from_guest = std::mem::take(&mut env.sent);
        let closed = std::mem::take(&mut env.closed);
        if outs.is_empty() && from_guest.is_empty() && closed.is_empty() {
            return events;
        }
        for (ws, _, _) in closed {
            pbx.on_closed(ws);
        }
        for (ws, f) in from_guest.drain(..) {
            if let WsFrame::Text(t) = f {
                pbx.on_frame(ws, &t);
            }
        }
        for o in outs {
            match o {
                Output::Dial { conn, .. } => {
                    c.handle(
                        env,
                        Event::WsOpen(WsOpen {
                            id: conn,
                            direction: WsDirection::Inbound,
                            path: "/innovaphone-microsoft365".into(),
                            headers: vec![],
                            peer: "127.0.0.1:1".into(),
                        }),
                    );
                    pbx.on_connected(conn);
                }
                Output::Send { conn, text } => {
                    c.handle(env, Event::WsMessage(conn, WsFrame::Text(text)));
                    events.extend(c.pbx_events.clone());
                }
                Output::Close { conn } | Output::CloseMidMessage { conn } => {
                    c.handle(
                        env,
                        Event::WsClosed(WsClosed {
                            id: conn,
                            code: 1006,
                            reason: String::new(),
                        }),
                    );
                    events.extend(c.pbx_events.clone());
                    pbx.on_closed(conn);
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }
    panic!("no quiescence");
}
