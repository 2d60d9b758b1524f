//! The JSON admin API (HTTP/1.1). Bound to loopback by default: it can
//! replace everything the mock serves.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::core::Core;
use crate::resource_type::ResourceType;
use crate::snapshot::Snapshot;
use crate::Error;

/// Snapshots of 10,000 clusters are tens of MB of YAML.
const MAX_BODY: usize = 256 << 20;

pub(crate) async fn serve(listener: TcpListener, core: Arc<Core>, xds_addr: SocketAddr) {
    let mut shutdown = core.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let core = core.clone();
                let mut sd = shutdown.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let core = core.clone();
                        async move { Ok::<_, Infallible>(handle(req, &core, xds_addr).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = sd.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": msg.to_string() }))
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k, true) == key).then(|| percent_decode(v, true))
    })
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn body_text(req: Request<Incoming>) -> Result<String, Response<Full<Bytes>>> {
    let collected = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")))?;
    String::from_utf8(collected.to_bytes().to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8"))
}

fn index(xds_addr: SocketAddr) -> Value {
    json!({
        "xds": xds_addr.to_string(),
        "endpoints": {
            "GET /healthz": "liveness and the version being served",
            "GET /snapshot": "the snapshot, in the snapshot file format (JSON)",
            "PUT /snapshot": "replace the snapshot (body: snapshot file, YAML or JSON)",
            "GET /resources/{type}": "names and versions; type is listeners, routes, clusters or endpoints",
            "GET /resources/{type}/{name}[?node=ID]": "one resource",
            "PUT /resources/{type}/{name}[?node=ID]": "add or replace one resource (body: YAML or JSON); with node, an override for that node",
            "DELETE /resources/{type}/{name}[?node=ID]": "remove one resource",
            "GET /clients": "connected streams: node, service, mode, per type: subscription, versions sent and ACKed, last NACK",
            "GET /events[?since=SEQ]": "ACK/NACK/request/response/snapshot log, newest last, bounded",
        }
    })
}

async fn handle(req: Request<Incoming>, core: &Core, xds_addr: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, []) => json_response(StatusCode::OK, &index(xds_addr)),
        (&Method::GET, ["healthz"]) => {
            let p = core.current();
            json_response(
                StatusCode::OK,
                &json!({"status": "ok", "version": p.version, "generation": p.generation, "resources": p.snapshot.default.len()}),
            )
        }
        (&Method::GET, ["snapshot"]) => {
            let p = core.current();
            let mut r = json_response(StatusCode::OK, &p.snapshot.to_json());
            if let Ok(v) = http::HeaderValue::from_str(&p.version) {
                r.headers_mut().insert("xds-version", v);
            }
            r
        }
        (&Method::PUT, ["snapshot"]) => {
            let text = match body_text(req).await {
                Ok(t) => t,
                Err(r) => return r,
            };
            match tokio::task::spawn_blocking(move || Snapshot::from_yaml(&text)).await {
                Ok(Ok(s)) => {
                    let warnings = s.warnings();
                    let p = core.publish(s, "PUT /snapshot");
                    json_response(
                        StatusCode::OK,
                        &json!({"version": p.version, "warnings": warnings}),
                    )
                }
                Ok(Err(e)) => {
                    let e = e.in_file("PUT /snapshot");
                    core.rejected("PUT /snapshot", &e);
                    error(StatusCode::BAD_REQUEST, e)
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (&Method::GET, ["clients"]) => json_response(StatusCode::OK, &json!(core.registry.clients())),
        (&Method::GET, ["events"]) => {
            let since = query_param(&req, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            json_response(StatusCode::OK, &json!(core.registry.events_since(since)))
        }
        (_, ["resources", ty, rest @ ..]) => {
            let Some(ty) = ResourceType::from_key(ty) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("unknown type `{ty}`; expected listeners, routes, clusters or endpoints"),
                );
            };
            let node = query_param(&req, "node");
            // Names may hold slashes (xdstp:// names): everything after the
            // type is the name.
            let name = rest.join("/");
            let rest: Vec<&str> = if rest.is_empty() {
                Vec::new()
            } else {
                vec![name.as_str()]
            };
            resources(req, core, &method, ty, &rest, node).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no {method} {path}; GET / lists the endpoints"),
        ),
    }
}

async fn resources(
    req: Request<Incoming>,
    core: &Core,
    method: &Method,
    ty: ResourceType,
    rest: &[&str],
    node: Option<String>,
) -> Response<Full<Bytes>> {
    let node = node.as_deref();
    match (method, rest) {
        (&Method::GET, []) => {
            let p = core.current();
            let set = match node {
                Some(n) => p.snapshot.resources_for(n),
                None => p.snapshot.default.clone(),
            };
            let list: Vec<Value> = set
                .get(ty)
                .values()
                .map(|r| json!({"name": r.name, "version": r.version}))
                .collect();
            json_response(StatusCode::OK, &json!(list))
        }
        (&Method::GET, [name]) => {
            let p = core.current();
            let set = match node {
                Some(n) => p.snapshot.resources_for(n),
                None => p.snapshot.default.clone(),
            };
            match set.get(ty).get(*name) {
                Some(r) => json_response(StatusCode::OK, &crate::snapshot_json::resource(ty, r)),
                None => error(StatusCode::NOT_FOUND, format!("no {} named `{name}`", ty.key())),
            }
        }
        (&Method::PUT, [name]) => {
            let text = match body_text(req).await {
                Ok(t) => t,
                Err(r) => return r,
            };
            let result = core.edit("PUT /resources", |s| {
                let mut copy = s.clone();
                let got = copy.upsert_yaml(node, ty, &text)?;
                if got != *name {
                    return Err(Error::Invalid(format!(
                        "the resource is named `{got}` but the path says `{name}`"
                    )));
                }
                *s = copy;
                Ok(())
            });
            match result {
                Ok((_, p)) => json_response(
                    StatusCode::OK,
                    &json!({"version": p.version, "warnings": p.snapshot.warnings()}),
                ),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        (&Method::DELETE, [name]) => {
            let result = core.edit("DELETE /resources", |s| {
                if s.remove(node, ty, name) {
                    Ok(())
                } else {
                    Err(Error::NotFound(format!("no {} named `{name}`", ty.key())))
                }
            });
            match result {
                Ok((_, p)) => json_response(StatusCode::OK, &json!({"version": p.version})),
                Err(e @ Error::NotFound(_)) => error(StatusCode::NOT_FOUND, e),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; GET / lists the endpoints"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%7Cb", false), "a|b");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%", false), "%");
        assert_eq!(percent_decode("%4", false), "%4");
        assert_eq!(percent_decode("%zz", false), "%zz");
    }
}
