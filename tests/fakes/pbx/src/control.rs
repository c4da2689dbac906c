//! HTTP/JSON control API on loopback (for tests in other processes and the demo). Every route
//! maps onto a library call of [`Pbx`](crate::pbx::Pbx) or [`Handle`]; see `README` in the
//! crate docs of [`serve`] for the route list.

use crate::client::AppKind;
use crate::dialer::Handle;
use crate::pbx::LoginFault;
use crate::switches::Switches;
use crate::users::{PopulateSpec, User, Visibility, populate};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Serves the control API on `addr` (use port 0 for any); returns the bound address.
///
/// Routes (JSON bodies and answers):
/// - `GET /status` nodes; `GET /violations`; `GET|PUT /switches`; `PUT /unanswered {apis:[..]}`
/// - `GET /objects` (configuration objects made through PbxAdminApi, without passwords)
/// - `GET /log[?node=]`, `DELETE /log`, `GET /received?node=` (frames from the connector)
/// - `POST /users` (User or [User]), `POST /populate` (PopulateSpec), `GET /users`,
///   `GET|DELETE /users/{guid}`, `POST /users/{guid}/presence {activity,note,contact?}`,
///   `GET /users/{guid}/presence` (list per PBX node as the App object sees it),
///   `POST /users/{guid}/call/start|end`, `PUT /users/{guid}/visibility {presence,otf,note}`,
///   `POST /users/{guid}/licence {lic,assign}`
/// - `GET|POST /licences {name,count}`, `GET /licence-checks`, `GET /alien-calls`, `GET /unallowed`
/// - `GET|POST /nodes` (NodeConfig: add a PBX, e.g. a slave), `PATCH /nodes/{name}` (merge into
///   its NodeConfig: apis, app password, dial_url...; effective at the next login)
/// - `/users/{id}` routes accept the GUID or the h323 name
/// - `POST /nodes/{name}/kill|restore|close-mid-message`, `POST /nodes/{name}/frame {text}`,
///   `POST /nodes/{name}/login-fault {fault}`, `POST /nodes/{name}/app-info {app}`,
///   `GET /app-info-results`, `POST /db/reset-guid`, `POST /storm {changes}` (presence burst),
///   `POST /seed-presence` (random `im:`/`tel:` items)
/// - `POST /sessions {guid (or h323),kind:user|admin|api,url?,search_api?}` → `{id}`; `GET /sessions/{id}`;
///   `POST /sessions/{id}/search {src,search,type?}`; `POST /sessions/{id}/config/items|read {src}`;
///   `POST /sessions/{id}/config/write {src,items:{},passwords:{name:plain}}`;
///   `POST /sessions/{id}/send {text}`; `DELETE /sessions/{id}`
pub async fn serve(h: Handle, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(h, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn reply(code: StatusCode, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

fn ok(v: Value) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, v)
}

fn not_found() -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, json!({"error":"not found"}))
}

fn bad(e: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

async fn handle(h: Handle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(String::from)
        .collect();
    let node_q = query(&req, "node");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(e),
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad(e),
        }
    };
    // `/users/{id}` accepts a GUID or an h323 name.
    let mut path = path;
    if path.len() >= 2 && path[0] == "users" {
        let id = path[1].clone();
        if let Some(g) = h.with(|x| {
            (x.user(&id).is_none())
                .then(|| x.find_user_by_sip(&id))
                .flatten()
        }) {
            path[1] = g;
        }
    }
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let m = &method;
    let res = route(&h, m, &p, node_q, body);
    match res {
        Ok(Some(v)) => ok(v),
        Ok(None) => not_found(),
        Err(e) => bad(e),
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("").to_string()
}

fn route(
    h: &Handle,
    m: &Method,
    p: &[&str],
    node_q: Option<String>,
    body: Value,
) -> anyhow::Result<Option<Value>> {
    let get = *m == Method::GET;
    let post = *m == Method::POST;
    let put = *m == Method::PUT;
    let del = *m == Method::DELETE;
    Ok(Some(match p {
        ["status"] if get => h.with(|x| json!(x.node_status())),
        ["violations"] if get => h.with(|x| json!(x.violations())),
        ["objects"] if get => h.with(|x| json!(x.objects())),
        ["switches"] if get => h.with(|x| json!(x.switches)),
        ["switches"] if put => {
            let mut cur = h.with(|x| serde_json::to_value(&x.switches))?;
            if let (Some(c), Some(b)) = (cur.as_object_mut(), body.as_object()) {
                for (k, v) in b {
                    c.insert(k.clone(), v.clone());
                }
            }
            let sw: Switches = serde_json::from_value(cur)?;
            h.with(|x| x.switches = sw.clone());
            json!(sw)
        }
        ["unanswered"] if put => {
            let apis: Vec<String> = serde_json::from_value(body["apis"].clone())?;
            h.with(|x| x.unanswered_apis = apis.into_iter().collect());
            json!({"ok":true})
        }
        ["log"] if get => h.with(|x| {
            json!(
                x.log()
                    .iter()
                    .filter(|e| node_q.as_ref().is_none_or(|n| &e.node == n))
                    .collect::<Vec<_>>()
            )
        }),
        ["log"] if del => {
            h.with(|x| x.clear_log());
            json!({"ok":true})
        }
        ["received"] if get => {
            let n = node_q.unwrap_or_else(|| "master".into());
            h.with(|x| json!(x.received(&n)))
        }
        ["users"] if post => {
            let users: Vec<User> = if body.is_array() {
                serde_json::from_value(body)?
            } else {
                vec![serde_json::from_value(body)?]
            };
            let n = users.len();
            h.with(|x| x.add_users(users));
            json!({"added": n})
        }
        ["populate"] if post => {
            let spec: PopulateSpec =
                serde_json::from_value(if body.is_null() { json!({}) } else { body })?;
            let users = populate(&spec);
            let n = users.len();
            h.with(|x| x.add_users(users));
            json!({"added": n})
        }
        ["users"] if get => h.with(|x| json!(x.users().collect::<Vec<_>>())),
        ["users", g] if get => match h.with(|x| x.user(g).cloned()) {
            Some(u) => json!(u),
            None => return Ok(None),
        },
        ["users", g] if del => json!({"ok": h.with(|x| x.delete_user(g))}),
        ["users", g, "presence"] if post => {
            let contact = body["contact"].as_str().unwrap_or("tel:").to_string();
            let (a, n) = (s(&body, "activity"), s(&body, "note"));
            let found = h.with(|x| {
                x.user(g).is_some() && {
                    x.set_presence(g, &contact, &a, &n);
                    true
                }
            });
            if !found {
                return Ok(None);
            }
            json!({"ok": true})
        }
        ["users", g, "presence"] if get => h.with(|x| {
            let mut out = serde_json::Map::new();
            for n in x.node_configs() {
                out.insert(n.name.clone(), json!(x.presence_view(g, &n.name)));
            }
            json!({"stored": x.stored_presence(g), "view": out})
        }),
        ["users", g, "call", "start"] if post => json!({"ok": h.with(|x| x.start_call(g))}),
        ["users", g, "call", "end"] if post => json!({"ok": h.with(|x| x.end_call(g))}),
        ["users", g, "visibility"] if put => {
            let v: Visibility = serde_json::from_value(body)?;
            json!({"ok": h.with(|x| x.set_visibility(g, v))})
        }
        ["users", g, "licence"] if post => {
            let lic = s(&body, "lic");
            let assign = body["assign"].as_bool().unwrap_or(true);
            json!({"ok": h.with(|x| x.assign_licence(g, &lic, assign))})
        }
        ["licences"] if get => h.with(|x| json!(x.licences())),
        ["licences"] if post => {
            let n = s(&body, "name");
            let c = body["count"].as_u64().unwrap_or(0) as u32;
            h.with(|x| x.set_licence(&n, c));
            json!({"ok":true})
        }
        ["licence-checks"] if get => h.with(|x| json!(x.licence_checks())),
        ["alien-calls"] if get => h.with(|x| json!(x.alien_calls())),
        ["unallowed"] if get => h.with(|x| json!(x.unallowed())),
        ["app-info-results"] if get => h.with(|x| json!(x.app_info_results())),
        ["seed-presence"] if post => {
            h.with(|x| x.seed_presence());
            json!({"ok":true})
        }
        ["storm"] if post => {
            let n = body["changes"].as_u64().unwrap_or(1000) as usize;
            h.with(|x| x.presence_storm(n));
            json!({"ok":true})
        }
        ["db", "reset-guid"] if post => {
            h.with(|x| x.reset_db_guid());
            json!({"ok":true})
        }
        ["nodes"] if get => h.with(|x| json!(x.node_configs())),
        ["nodes"] if post => {
            let cfg: crate::pbx::NodeConfig = serde_json::from_value(body)?;
            h.with(|x| x.add_node(cfg));
            json!({"ok":true})
        }
        ["nodes", n] if m == Method::PATCH => {
            let Some(cur) = h.with(|x| x.node_config_mut(n).map(|c| serde_json::to_value(&*c)))
            else {
                return Ok(None);
            };
            let mut cur = cur?;
            merge(&mut cur, &body);
            let cfg: crate::pbx::NodeConfig = serde_json::from_value(cur)?;
            h.with(|x| {
                if let Some(c) = x.node_config_mut(n) {
                    *c = cfg.clone();
                }
            });
            json!(cfg)
        }
        ["nodes", n, "kill"] if post => {
            h.with(|x| x.kill(n));
            json!({"ok":true})
        }
        ["nodes", n, "restore"] if post => {
            h.with(|x| x.restore(n));
            json!({"ok":true})
        }
        ["nodes", n, "close-mid-message"] if post => {
            h.with(|x| x.close_mid_message(n));
            json!({"ok":true})
        }
        ["nodes", n, "frame"] if post => {
            let t = s(&body, "text");
            json!({"ok": h.with(|x| x.inject_frame(n, &t))})
        }
        ["nodes", n, "login-fault"] if post => {
            let f: LoginFault = serde_json::from_value(body["fault"].clone())?;
            h.with(|x| x.inject_login_fault(n, f));
            json!({"ok":true})
        }
        ["nodes", n, "app-info"] if post => {
            let a = s(&body, "app");
            json!({"ok": h.with(|x| x.send_app_info(n, &a))})
        }
        ["sessions"] if post => {
            let kind: AppKind = serde_json::from_value(body["kind"].clone())?;
            let mut g = s(&body, "guid");
            if let Some(x) = h.with(|x| {
                x.user(&g)
                    .is_none()
                    .then(|| x.find_user_by_sip(&g))
                    .flatten()
            }) {
                g = x;
            }
            let Some(mut cfg) = h.with(|x| x.user_session(&g, kind)) else {
                return Ok(None);
            };
            if let Some(a) = body["search_api"].as_str() {
                cfg.search_api = a.into();
            }
            let url = body["url"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| ws_url(&cfg.obj.url));
            json!({"id": h.open_session(&url, cfg)})
        }
        ["sessions", id] if get => match h.session_json(id.parse()?) {
            Some(v) => v,
            None => return Ok(None),
        },
        ["sessions", id] if del => {
            h.close_session(id.parse()?);
            json!({"ok":true})
        }
        ["sessions", id, "search"] if post => {
            let (src, q) = (s(&body, "src"), s(&body, "search"));
            let t = body["type"].as_str().map(String::from);
            h.with_session(id.parse()?, |x| {
                let f = x.search(&src, &q, t.as_deref());
                (json!({"ok":true}), vec![f])
            })
            .unwrap_or(Value::Null)
        }
        ["sessions", id, "config", what] if post => {
            let src = s(&body, "src");
            let what = what.to_string();
            h.with_session(id.parse()?, |x| {
                let f = match what.as_str() {
                    "items" => x.get_config_items(&src),
                    "read" => x.read_config(&src),
                    _ => {
                        let items = body["items"].as_object().cloned().unwrap_or_default();
                        let pw: Vec<(String, String)> = body["passwords"]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let pw: Vec<(&str, &str)> =
                            pw.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                        x.write_config(&src, &items, &pw)
                    }
                };
                (json!({"ok":true}), vec![f])
            })
            .unwrap_or(Value::Null)
        }
        ["sessions", id, "send"] if post => {
            let t = s(&body, "text");
            h.with_session(id.parse()?, |_| (json!({"ok":true}), vec![t]))
                .unwrap_or(Value::Null)
        }
        _ => return Ok(None),
    }))
}

/// Recursive JSON merge (objects merged, everything else replaced).
fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// App URL → websocket URL (http→ws, https→wss).
pub fn ws_url(url: &str) -> String {
    url.replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1)
}
