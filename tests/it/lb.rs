//! Consistent-hash load balancing end to end: RING_HASH and MAGLEV clusters
//! of real origins, keyed by a route `hash_policy`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use legate::model::lb::{self, Maglev, MaglevConfig, RingHash, RingHashConfig};

use super::support::client::get;
use super::support::{front_bootstrap, origin, route, Legate};

/// A STATIC cluster `name` with `lb_policy` over `origins`.
fn cluster(name: &str, lb_policy: &str, origins: &[SocketAddr]) -> String {
    let endpoints: Vec<String> = origins
        .iter()
        .map(|a| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "  - name: {name}\n    type: STATIC\n    lb_policy: {lb_policy}\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{lb_endpoints: [{}]}}]\n",
        endpoints.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_policy_pins_each_user_to_one_origin() {
    let names = ["a", "b", "c"];
    let mut origins = Vec::new();
    for n in names {
        origins.push(origin::start(n).await);
    }
    let by_port: HashMap<u16, &str> = origins.iter().map(|a| a.port()).zip(names).collect();
    let policy = ", hash_policy: [{header: {header_name: x-user}}]";
    let routes = format!(
        "{}{}",
        route("/maglev", "maglev", policy),
        route("/", "ring", policy)
    );
    let clusters = format!(
        "{}{}",
        cluster("ring", "RING_HASH", &origins),
        cluster("maglev", "MAGLEV", &origins)
    );
    let legate = Legate::start(&front_bootstrap("", &routes, &clusters), &[]);
    let front = legate.addr("front");

    // What Envoy would pick: the same ring / table over `ip:port` keys, and
    // the xxHash64 of the header value.
    let keys: Vec<(String, u32)> = origins.iter().map(|a| (lb::host_key(*a), 1)).collect();
    let ring = RingHash::build(&keys, &RingHashConfig::default());
    let maglev = Maglev::build(&keys, &MaglevConfig::default());

    for path in ["/", "/maglev"] {
        let mut seen = HashSet::new();
        for user in 0..24 {
            let user = format!("user-{user}");
            let hash = lb::xxhash64(user.as_bytes(), 0);
            let want = if path == "/" {
                ring.pick(hash)
            } else {
                maglev.pick(hash)
            }
            .map(|i| by_port[&origins[i].port()]);
            let mut got = Vec::new();
            for _ in 0..3 {
                let r = get(front, path, &[("x-user", user.as_str())]).await;
                assert_eq!(r.status, 200, "{}", r.body);
                got.push(r.header("x-origin").unwrap_or("").to_string());
            }
            assert!(
                got.iter().all(|o| Some(o.as_str()) == want),
                "{path} {user}: {got:?}, want {want:?}"
            );
            seen.insert(got[0].clone());
        }
        assert!(seen.len() > 1, "{path}: every user went to {seen:?}");
    }

    // Without the header there is no hash: Envoy picks at random.
    let mut seen = HashSet::new();
    for _ in 0..30 {
        let r = get(front, "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.insert(r.header("x-origin").unwrap_or("").to_string());
    }
    assert!(seen.len() > 1, "no hash should spread: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_policy_with_a_ttl_makes_up_the_cookie_and_sticks_to_it() {
    let names = ["a", "b", "c"];
    let mut origins = Vec::new();
    for n in names {
        origins.push(origin::start(n).await);
    }
    let by_port: HashMap<u16, &str> = origins.iter().map(|a| a.port()).zip(names).collect();
    let policy = ", hash_policy: [{cookie: {name: sticky, ttl: 3600s, path: /}}]";
    let legate = Legate::start(
        &front_bootstrap(
            "",
            &route("/", "ring", policy),
            &cluster("ring", "RING_HASH", &origins),
        ),
        &[],
    );
    let front = legate.addr("front");
    let keys: Vec<(String, u32)> = origins.iter().map(|a| (lb::host_key(*a), 1)).collect();
    let ring = RingHash::build(&keys, &RingHashConfig::default());

    let mut seen = HashSet::new();
    for _ in 0..8 {
        // No cookie: legate makes one up (new connection each time, so a
        // new value) and routes by it, as the client will route later.
        let r = get(front, "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let set = r.header("set-cookie").expect("a set-cookie").to_string();
        let value = set
            .strip_prefix("sticky=\"")
            .and_then(|v| v.split_once('"'))
            .map(|(v, rest)| {
                assert_eq!(rest, "; Max-Age=3600; Path=/; HttpOnly", "{set}");
                v.to_string()
            })
            .unwrap_or_else(|| panic!("unexpected set-cookie {set}"));
        assert_eq!(value.len(), 16, "{set}");
        let want = ring
            .pick(lb::xxhash64(value.as_bytes(), 0))
            .map(|i| by_port[&origins[i].port()]);
        assert_eq!(r.header("x-origin"), want, "{set}");
        // With the cookie: the same origin every time, and nothing set.
        let cookie = format!("sticky=\"{value}\"");
        for _ in 0..3 {
            let again = get(front, "/", &[("cookie", cookie.as_str())]).await;
            assert_eq!(again.header("x-origin"), want);
            assert!(again.header("set-cookie").is_none());
        }
        seen.insert(want);
    }
    assert!(seen.len() > 1, "every made-up cookie went to {seen:?}");
}
