//! DNS clusters against a real name server: a small authoritative DNS
//! server (wire format, UDP and TCP) runs inside the test with an answer
//! table the test edits, the real legate binary resolves through it
//! (`typed_dns_resolver_config` → c-ares `resolvers`), and origins listen on
//! 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to lo).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::client::get;
use super::support::{front_bootstrap, origin, route, validate, Dir, Legate};

// ---------------------------------------------------------------------------
// The test name server.

/// What the server answers for a name. A name not in the table is NXDOMAIN.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A / AAAA records (a query for a type with none gets NODATA).
    Records(Vec<IpAddr>),
    /// SERVFAIL: a failed resolution, not an empty one.
    ServFail,
}

#[derive(Default)]
struct Zone {
    names: Mutex<HashMap<String, Answer>>,
    ttl: AtomicU32,
}

/// An authoritative DNS server on 127.0.0.1 (UDP and TCP, same port).
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_FORMERR: u16 = 1;

impl DnsServer {
    pub async fn start() -> DnsServer {
        // UDP and TCP on one port: retry until a free UDP port is free on TCP too.
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind dns udp");
            let port = udp.local_addr().expect("addr").port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("addr");
        let zone = Arc::new(Zone {
            names: Mutex::new(HashMap::new()),
            ttl: AtomicU32::new(1),
        });
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        {
            let zone = zone.clone();
            let count = udp_queries.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = respond(&buf[..n], &zone) {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                }
            });
        }
        {
            let zone = zone.clone();
            let count = tcp_queries.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let zone = zone.clone();
                    let count = count.clone();
                    tokio::spawn(async move {
                        // RFC 1035 4.2.2: each message after a two-byte length.
                        loop {
                            let mut len = [0u8; 2];
                            if stream.read_exact(&mut len).await.is_err() {
                                return;
                            }
                            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if stream.read_exact(&mut msg).await.is_err() {
                                return;
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                            let Some(reply) = respond(&msg, &zone) else { return };
                            let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                            out.extend_from_slice(&reply);
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        DnsServer {
            addr,
            zone,
            udp_queries,
            tcp_queries,
        }
    }

    pub fn set(&self, name: &str, answer: Answer) {
        self.zone
            .names
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), answer);
    }

    pub fn records(&self, name: &str, ips: &[&str]) {
        self.set(
            name,
            Answer::Records(ips.iter().map(|i| i.parse().expect("ip")).collect()),
        );
    }

    /// From now on the name does not exist (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        self.zone.names.lock().unwrap().remove(&name.to_ascii_lowercase());
    }

    pub fn set_ttl(&self, ttl: u32) {
        self.zone.ttl.store(ttl, Ordering::SeqCst);
    }

    pub fn queries(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst) + self.tcp_queries.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` more queries have arrived.
    pub async fn wait_queries(&self, n: usize) {
        let target = self.queries() + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.queries() < target {
            assert!(Instant::now() < deadline, "no DNS queries for 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The reply to one query message: the question echoed, then the answers.
/// Only what a stub resolver sends is understood: one question, names
/// without compression. `None` for anything that is not a query at all.
fn respond(q: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let flags = u16::from_be_bytes([q[2], q[3]]);
    let qdcount = u16::from_be_bytes([q[4], q[5]]);
    let mut reply = q[..2].to_vec();
    // QR, the query's opcode and RD, AA; RA.
    let head = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080;
    let header = |rcode: u16, qd: u16, an: u16| {
        let mut h = Vec::with_capacity(10);
        h.extend_from_slice(&(head | rcode).to_be_bytes());
        for n in [qd, an, 0, 0] {
            h.extend_from_slice(&n.to_be_bytes());
        }
        h
    };
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            reply.extend(header(RCODE_FORMERR, 0, 0));
            return Some(reply);
        }
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    if qdcount != 1 {
        reply.extend(header(RCODE_FORMERR, 0, 0));
        return Some(reply);
    }
    let name = labels.join(".");
    let answer = zone.names.lock().unwrap().get(&name).cloned();
    let ttl = zone.ttl.load(Ordering::SeqCst);
    let records: Vec<IpAddr> = match answer {
        None => {
            reply.extend(header(RCODE_NXDOMAIN, 1, 0));
            reply.extend_from_slice(question);
            return Some(reply);
        }
        Some(Answer::ServFail) => {
            reply.extend(header(RCODE_SERVFAIL, 1, 0));
            reply.extend_from_slice(question);
            return Some(reply);
        }
        Some(Answer::Records(ips)) => ips
            .into_iter()
            .filter(|ip| match ip {
                IpAddr::V4(_) => qtype == TYPE_A,
                IpAddr::V6(_) => qtype == TYPE_AAAA,
            })
            .collect(),
    };
    reply.extend(header(0, 1, records.len() as u16));
    reply.extend_from_slice(question);
    for ip in records {
        // The name as a pointer to the question (offset 12).
        reply.extend_from_slice(&[0xc0, 0x0c]);
        let (ty, data) = match ip {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        reply.extend_from_slice(&ty.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes());
        reply.extend_from_slice(&ttl.to_be_bytes());
        reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
        reply.extend_from_slice(&data);
    }
    Some(reply)
}

#[test]
fn the_test_server_speaks_dns() {
    let zone = Zone::default();
    zone.names.lock().unwrap().insert(
        "service.test".into(),
        Answer::Records(vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()]),
    );
    // id 0x1234, RD, one question: Service.Test A IN.
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["Service", "Test"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let r = respond(&q, &zone).unwrap();
    assert_eq!(&r[..4], &[0x12, 0x34, 0x85, 0x80], "id, QR AA RD RA, NOERROR");
    assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
    assert_eq!(&r[12..q.len()], &q[12..], "question echoed");
    assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 2]);
    // AAAA for a name without: NODATA; unknown name: NXDOMAIN.
    let mut aaaa = q.clone();
    let n = aaaa.len();
    aaaa[n - 3] = 28;
    let r = respond(&aaaa, &zone).unwrap();
    assert_eq!((r[3] & 0x0f, r[7]), (0, 1), "AAAA ::1");
    zone.names.lock().unwrap().clear();
    let r = respond(&q, &zone).unwrap();
    assert_eq!((r[3] & 0x0f, r[7]), (3, 0), "NXDOMAIN");
}

// ---------------------------------------------------------------------------
// legate against it.

/// Two origins on one port: "a" on 127.0.0.2, "b" on 127.0.0.3.
async fn two_origins() -> u16 {
    for _ in 0..50 {
        let a = origin::start_at("127.0.0.2:0".parse().unwrap(), "a")
            .await
            .expect("bind 127.0.0.2");
        if origin::start_at(SocketAddr::new("127.0.0.3".parse().unwrap(), a.port()), "b")
            .await
            .is_ok()
        {
            return a.port();
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn cares(dns: SocketAddr, options: &str) -> String {
    format!(
        r#"
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}]
        dns_resolver_options: {{no_default_search_domain: true}}
{options}"#,
        port = dns.port()
    )
}

/// A front listener routing everything to cluster `service`, whose one
/// endpoint is `service.test:port`; `cluster_extra` and `bootstrap_extra`
/// are YAML lines for the cluster and the bootstrap.
fn config(kind: &str, port: u16, cluster_extra: &str, bootstrap_extra: &str) -> String {
    let cluster = format!(
        "  - name: service\n    type: {kind}\n    connect_timeout: 1s\n{cluster_extra}\n    load_assignment:\n      cluster_name: service\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: service.test, port_value: {port}}}}}}}}}]}}]\n"
    );
    format!(
        "{bootstrap_extra}\n{}",
        front_bootstrap("", &route("/", "service", ""), &cluster)
    )
}

/// Which origin answered: "a", "b", or the status for anything but 200.
async fn who(front: SocketAddr) -> String {
    let r = get(front, "/", &[]).await;
    if r.status == 200 {
        r.header("x-origin").unwrap_or("?").to_string()
    } else {
        r.status.to_string()
    }
}

/// Polls (bounded: 5 s) until `n` requests in a row are answered by `want`.
async fn until_all(front: SocketAddr, want: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut run = 0;
    let mut last = String::new();
    while run < n {
        assert!(
            Instant::now() < deadline,
            "not every request reached {want} within 5 s (last: {last})"
        );
        last = who(front).await;
        if last == want {
            run += 1;
        } else {
            run = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn seen(front: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(who(front).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_follows_the_name_server() {
    let dns = DnsServer::start().await;
    let port = two_origins().await;
    dns.records("service.test", &["127.0.0.2", "127.0.0.3"]);
    let cluster = format!(
        "    dns_refresh_rate: 0.2s\n    typed_dns_resolver_config:{}",
        cares(dns.addr, "")
    );
    let legate = Legate::start(&config("STRICT_DNS", port, &cluster, ""), &[]);
    let front = legate.addr("front");

    // Both addresses are hosts, round robin over them.
    let got = seen(front, 8).await;
    assert!(got.iter().all(|o| o == "a" || o == "b"), "{got:?}");
    assert!(got.contains(&"a".into()) && got.contains(&"b".into()), "{got:?}");

    // The answer changes: within a few refreshes only 127.0.0.3 serves.
    dns.records("service.test", &["127.0.0.3"]);
    until_all(front, "b", 6).await;

    // A failed resolution (SERVFAIL) keeps the hosts that were there.
    dns.set("service.test", Answer::ServFail);
    dns.wait_queries(4).await;
    let got = seen(front, 6).await;
    assert!(got.iter().all(|o| o == "b"), "{got:?}");

    // Back, with both addresses again.
    dns.records("service.test", &["127.0.0.2", "127.0.0.3"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen(front, 4).await.contains(&"a".to_string()) {
        assert!(Instant::now() < deadline, "127.0.0.2 did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // NXDOMAIN is a completed resolution with no addresses (Envoy's c-ares
    // resolver): a STRICT_DNS target then has no hosts, so 503.
    dns.remove("service.test");
    until_all(front, "503", 3).await;
    dns.records("service.test", &["127.0.0.2"]);
    until_all(front, "a", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_dns_uses_the_first_address_and_keeps_it() {
    let dns = DnsServer::start().await;
    let port = two_origins().await;
    dns.records("service.test", &["127.0.0.2", "127.0.0.3"]);
    let cluster = format!(
        "    dns_refresh_rate: 0.2s\n    dns_lookup_family: V4_ONLY\n    typed_dns_resolver_config:{}",
        cares(dns.addr, "")
    );
    let legate = Legate::start(&config("LOGICAL_DNS", port, &cluster, ""), &[]);
    let front = legate.addr("front");

    let got = seen(front, 6).await;
    assert!(got.iter().all(|o| o == "a"), "only the first address: {got:?}");

    // NXDOMAIN and SERVFAIL leave a LOGICAL_DNS cluster as it was.
    dns.remove("service.test");
    dns.wait_queries(3).await;
    dns.set("service.test", Answer::ServFail);
    dns.wait_queries(3).await;
    let got = seen(front, 4).await;
    assert!(got.iter().all(|o| o == "a"), "{got:?}");

    dns.records("service.test", &["127.0.0.3", "127.0.0.2"]);
    until_all(front, "b", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respect_dns_ttl_refreshes_at_the_record_ttl() {
    let dns = DnsServer::start().await;
    let port = two_origins().await;
    dns.set_ttl(1);
    dns.records("service.test", &["127.0.0.2"]);
    // A refresh rate far beyond the test: only the 1 s TTL can pick up the change.
    let cluster = format!(
        "    dns_refresh_rate: 300s\n    respect_dns_ttl: true\n    typed_dns_resolver_config:{}",
        cares(dns.addr, "")
    );
    let legate = Legate::start(&config("STRICT_DNS", port, &cluster, ""), &[]);
    let front = legate.addr("front");
    until_all(front, "a", 3).await;
    dns.records("service.test", &["127.0.0.3"]);
    until_all(front, "b", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_resolver_is_the_default_and_deprecated_fields_still_work() {
    let dns = DnsServer::start().await;
    let port = two_origins().await;
    dns.records("service.test", &["127.0.0.3"]);

    // The bootstrap's typed_dns_resolver_config serves clusters without one.
    let bootstrap = format!("typed_dns_resolver_config:{}", cares(dns.addr, ""));
    let legate = Legate::start(
        &config("STRICT_DNS", port, "    dns_refresh_rate: 0.2s", &bootstrap),
        &[],
    );
    until_all(legate.addr("front"), "b", 3).await;
    assert!(dns.udp_queries.load(Ordering::SeqCst) > 0);
    drop(legate);

    // The deprecated cluster fields: dns_resolvers, over TCP.
    let udp_before = dns.udp_queries.load(Ordering::SeqCst);
    let cluster = format!(
        "    dns_refresh_rate: 0.2s\n    use_tcp_for_dns_lookups: true\n    dns_resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {}}}}}]",
        dns.addr.port()
    );
    let text = config("STRICT_DNS", port, &cluster, "");
    let dir = Dir::new();
    let run = validate(&dir.write("deprecated.yaml", &text));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("`dns_resolvers` is deprecated")
            && out.contains("`use_tcp_for_dns_lookups` is deprecated"),
        "{out}"
    );
    let legate = Legate::start(&text, &[]);
    until_all(legate.addr("front"), "b", 3).await;
    assert!(
        dns.tcp_queries.load(Ordering::SeqCst) > 0,
        "queries went over TCP"
    );
    assert_eq!(
        dns.udp_queries.load(Ordering::SeqCst),
        udp_before,
        "and none over UDP"
    );
}

#[test]
fn resolver_config_errors_name_the_field() {
    let dns: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let dir = Dir::new();
    let cases = [
        (
            cares(dns, "").replace("address: 127.0.0.1", "address: dns.example"),
            vec![
                "static_resources.clusters[0].typed_dns_resolver_config.typed_config.resolvers[0].socket_address.address",
                "not an IP address",
            ],
        ),
        (
            cares(dns, "        udp_max_queries: 10"),
            vec!["udp_max_queries", "not supported"],
        ),
        (
            cares(dns, "        edns0_max_payload_size: 100"),
            vec!["edns0_max_payload_size", "512..=4096"],
        ),
        (
            "\n      name: envoy.network.dns_resolver.apple\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.network.dns_resolver.apple.v3.AppleDnsResolverConfig\n".to_string(),
            vec!["AppleDnsResolverConfig", "not supported"],
        ),
        (
            "\n      name: envoy.network.dns_resolver.cares\n".to_string(),
            vec!["typed_dns_resolver_config", "needs a `typed_config`"],
        ),
    ];
    for (i, (resolver, want)) in cases.iter().enumerate() {
        let text = config(
            "STRICT_DNS",
            80,
            &format!("    typed_dns_resolver_config:{resolver}"),
            "",
        );
        let run = validate(&dir.write(&format!("bad{i}.yaml"), &text));
        assert_eq!(run.code, Some(1), "case {i}: {}", run.stdout);
        for w in want {
            assert!(run.stderr.contains(w), "case {i}: want {w:?} in {}", run.stderr);
        }
    }
    // dns_failure_refresh_rate must not shrink.
    let text = config(
        "STRICT_DNS",
        80,
        "    dns_failure_refresh_rate: {base_interval: 2s, max_interval: 1s}",
        "",
    );
    let run = validate(&dir.write("backoff.yaml", &text));
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("static_resources.clusters[0].dns_failure_refresh_rate.max_interval"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_warm_on_init_false_serves_before_the_first_answer() {
    // A name server that never answers, and a 30 s query timeout: waiting
    // for the first resolution would outlast Legate::start's 20 s bound.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let cluster = format!(
        "    wait_for_warm_on_init: false\n    typed_dns_resolver_config:{}",
        cares(silent.local_addr().unwrap(), "        query_timeout_seconds: 30")
    );
    let legate = Legate::start(&config("STRICT_DNS", 80, &cluster, ""), &[]);
    // No hosts yet: Envoy's "no healthy upstream".
    let r = get(legate.addr("front"), "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    drop(silent);
}
