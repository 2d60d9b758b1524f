//! A listener and its HTTP connection manager, as the data plane uses them.

use super::duration;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::validate::{unpack, HCM_TYPE, ROUTER_TYPE};
use crate::proto::envoy::config::core::v3::{address, socket_address};
use crate::proto::envoy::config::listener::v3::{filter, Listener as PListener};
use crate::proto::envoy::extensions::filters::http::router::v3::Router;
use crate::proto::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager,
};

use super::route_table::RouteTable;

pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// HCM `drain_timeout`'s default: between HTTP/2's shutdown notice and
/// its final GOAWAY.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;
pub const DEFAULT_SERVER_NAME: &str = "envoy";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

#[derive(Debug)]
pub enum Routes {
    Static(Arc<RouteTable>),
    /// Routes from RDS, by RouteConfiguration name.
    Rds(String),
}

#[derive(Debug)]
pub struct Hcm {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: Routes,
    /// `rds.config_source`: where the RDS route configuration comes from.
    pub rds_config_source: Option<crate::proto::envoy::config::core::v3::ConfigSource>,
    pub server_name: String,
    /// `server_name` as a header value, built once.
    pub server_value: Option<http::HeaderValue>,
    pub server_header: ServerHeader,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    /// `internal_address_config`: which trusted client addresses make a
    /// request internal (none when unset, as in Envoy 1.36+).
    pub internal_addresses: InternalAddresses,
    pub via: String,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub suppress_envoy_headers: bool,
    /// Pass `Expect: 100-continue` upstream instead of answering it here.
    pub proxy_100_continue: bool,
    /// `http_protocol_options.accept_http_10`, and the host used for an
    /// HTTP/1.0 request without one (`default_host_for_http_10`).
    pub accept_http_10: bool,
    pub default_host_for_http_10: String,
    pub stream_idle_timeout: Option<Duration>,
    /// `drain_timeout`: how long HTTP/2 streams may still open after the
    /// shutdown notice (the final GOAWAY comes sooner when the client's
    /// PING answer shows it has seen the notice).
    pub drain_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_request_headers_kb: u32,
    pub max_headers_count: u32,
    pub max_requests_per_connection: Option<u32>,
    /// `http2_protocol_options.max_concurrent_streams` for downstream HTTP/2
    /// (Envoy's default 2^31-1; hyper's own would be 200).
    pub h2_max_concurrent_streams: u32,
    /// `http2_protocol_options.initial_stream_window_size` and
    /// `initial_connection_window_size` (legate's defaults are smaller
    /// than Envoy's: see `h2_server::DEFAULT_STREAM_WINDOW`).
    pub h2_initial_stream_window: u32,
    pub h2_initial_connection_window: u32,
    pub strip_matching_host_port: bool,
    pub strip_any_host_port: bool,
    /// (upgrade type lower-cased, enabled)
    pub upgrades: Vec<(String, bool)>,
    pub access_logs: Vec<crate::access_log::AccessLog>,
    pub stats: super::stats::HttpStats,
}

impl Hcm {
    /// Whether requests must keep copies of their headers for access logs,
    /// formatted header values or `always_set_request_id_in_response`
    /// (copies cost an allocation per request).
    pub fn records_headers(&self) -> bool {
        !self.access_logs.is_empty()
            || self.always_set_request_id_in_response
            || matches!(&self.routes, Routes::Static(t) if t.has_formatted_headers())
    }
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub hcm: Arc<Hcm>,
    /// `traffic_direction: INBOUND` (for `/drain_listeners?inboundonly`).
    pub inbound: bool,
    pub access_logs: Vec<crate::access_log::AccessLog>,
    /// `per_connection_buffer_limit_bytes` (Envoy's default 1 MiB): how much
    /// of a response an HTTP/1.1 connection queues for a slow client, and
    /// how many pipelined bytes it reads ahead, before it stops reading.
    pub buffer_limit: usize,
}

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

/// `None` when the duration is set to 0 (disabled), the default when unset.
fn timeout(d: Option<&prost_types::Duration>, default: Option<Duration>) -> Option<Duration> {
    match d {
        None => default,
        Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
    }
}

pub fn socket_addr(a: Option<&crate::proto::envoy::config::core::v3::Address>) -> Result<SocketAddr, String> {
    let Some(address::Address::SocketAddress(sa)) = a.and_then(|a| a.address.as_ref()) else {
        return Err("a listener needs a socket_address".into());
    };
    let ip: IpAddr = sa
        .address
        .parse()
        .map_err(|_| format!("`{}` is not an IP address", sa.address))?;
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| format!("{p} is not a port"))?
        }
        _ => 0,
    };
    Ok(SocketAddr::new(ip, port))
}

impl Listener {
    pub fn compile(l: &PListener) -> Result<Listener, String> {
        let address = socket_addr(l.address.as_ref())?;
        let chain = l
            .filter_chains
            .first()
            .or(l.default_filter_chain.as_ref())
            .ok_or("a listener needs a filter chain")?;
        let hcm = chain
            .filters
            .iter()
            .find_map(|f| match &f.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => unpack::<HttpConnectionManager>(any, HCM_TYPE),
                _ => None,
            })
            .ok_or("legate serves HTTP listeners only: the filter chain needs the HTTP connection manager")?;
        Ok(Listener {
            // Envoy names unnamed static listeners with a UUID.
            name: if l.name.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                l.name.clone()
            },
            address,
            hcm: Arc::new(Hcm::compile(&hcm)?),
            inbound: l.traffic_direction
                == crate::proto::envoy::config::core::v3::TrafficDirection::Inbound as i32,
            access_logs: crate::access_log::build_all(&l.access_log)?,
            // A very small limit still lets a head and a frame through.
            buffer_limit: l
                .per_connection_buffer_limit_bytes
                .map_or(DEFAULT_BUFFER_LIMIT, |v| (v as usize).max(16 * 1024)),
        })
    }
}

impl Hcm {
    pub fn compile(h: &HttpConnectionManager) -> Result<Hcm, String> {
        use http_connection_manager::{CodecType, RouteSpecifier, ServerHeaderTransformation};
        let routes = match &h.route_specifier {
            Some(RouteSpecifier::RouteConfig(rc)) => Routes::Static(Arc::new(RouteTable::compile(rc)?)),
            Some(RouteSpecifier::Rds(rds)) => Routes::Rds(rds.route_config_name.clone()),
            _ => return Err("the HTTP connection manager needs route_config or rds".into()),
        };
        let router: Router = h
            .http_filters
            .iter()
            .rev()
            .find_map(|f| match &f.config_type {
                Some(http_filter::ConfigType::TypedConfig(any)) => unpack::<Router>(any, ROUTER_TYPE),
                _ => None,
            })
            .unwrap_or_default();
        let common = h.common_http_protocol_options.unwrap_or_default();
        Ok(Hcm {
            stat_prefix: h.stat_prefix.clone(),
            codec: match CodecType::try_from(h.codec_type) {
                Ok(CodecType::Http1) => Codec::Http1,
                Ok(CodecType::Http2) => Codec::Http2,
                Ok(CodecType::Http3) => return Err("HTTP/3 is not supported by legate yet".into()),
                _ => Codec::Auto,
            },
            routes,
            rds_config_source: match &h.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => rds.config_source.clone(),
                _ => None,
            },
            server_name: if h.server_name.is_empty() {
                DEFAULT_SERVER_NAME.into()
            } else {
                h.server_name.clone()
            },
            server_value: http::HeaderValue::from_str(if h.server_name.is_empty() {
                DEFAULT_SERVER_NAME
            } else {
                &h.server_name
            })
            .ok(),
            server_header: match ServerHeaderTransformation::try_from(h.server_header_transformation) {
                Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
                Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
                _ => ServerHeader::Overwrite,
            },
            use_remote_address: h.use_remote_address.unwrap_or(false),
            xff_num_trusted_hops: h.xff_num_trusted_hops,
            skip_xff_append: h.skip_xff_append,
            internal_addresses: internal_addresses(h.internal_address_config.as_ref())?,
            via: h.via.clone(),
            generate_request_id: h.generate_request_id.unwrap_or(true),
            preserve_external_request_id: h.preserve_external_request_id,
            always_set_request_id_in_response: h.always_set_request_id_in_response,
            suppress_envoy_headers: router.suppress_envoy_headers,
            proxy_100_continue: h.proxy_100_continue,
            accept_http_10: h.http_protocol_options.as_ref().is_some_and(|o| o.accept_http_10),
            default_host_for_http_10: h
                .http_protocol_options
                .as_ref()
                .map(|o| o.default_host_for_http_10.clone())
                .unwrap_or_default(),
            stream_idle_timeout: timeout(h.stream_idle_timeout.as_ref(), Some(DEFAULT_STREAM_IDLE_TIMEOUT)),
            drain_timeout: h.drain_timeout.as_ref().map_or(DEFAULT_DRAIN_TIMEOUT, duration),
            request_timeout: timeout(h.request_timeout.as_ref(), None),
            request_headers_timeout: timeout(h.request_headers_timeout.as_ref(), None),
            idle_timeout: timeout(
                common.idle_timeout.as_ref(),
                Some(DEFAULT_CONNECTION_IDLE_TIMEOUT),
            ),
            max_request_headers_kb: h.max_request_headers_kb.unwrap_or(DEFAULT_MAX_REQUEST_HEADERS_KB),
            max_headers_count: common.max_headers_count.unwrap_or(DEFAULT_MAX_HEADERS_COUNT),
            max_requests_per_connection: common.max_requests_per_connection.filter(|n| *n > 0),
            h2_initial_stream_window: h2_window(
                h.http2_protocol_options
                    .as_ref()
                    .and_then(|o| o.initial_stream_window_size),
                crate::http::h2_server::DEFAULT_STREAM_WINDOW,
            ),
            h2_initial_connection_window: h2_window(
                h.http2_protocol_options
                    .as_ref()
                    .and_then(|o| o.initial_connection_window_size),
                crate::http::h2_server::DEFAULT_CONNECTION_WINDOW,
            ),
            h2_max_concurrent_streams: h
                .http2_protocol_options
                .as_ref()
                .and_then(|o| o.max_concurrent_streams)
                .unwrap_or(super::cluster::DEFAULT_H2_MAX_STREAMS)
                .max(1),
            strip_matching_host_port: h.strip_matching_host_port,
            strip_any_host_port: matches!(
                h.strip_port_mode,
                Some(http_connection_manager::StripPortMode::StripAnyHostPort(true))
            ),
            upgrades: h
                .upgrade_configs
                .iter()
                .map(|u| (u.upgrade_type.to_ascii_lowercase(), u.enabled.unwrap_or(true)))
                .collect(),
            access_logs: crate::access_log::build_all(&h.access_log)?,
            stats: super::stats::HttpStats::new(&h.stat_prefix),
        })
    }
}

/// The addresses that make a request internal (`internal_address_config`
/// `cidr_ranges`). Unset, no address does: Envoy 1.36 removed its old
/// default of trusting RFC 1918 and loopback peers (the
/// `explicit_internal_address_config` runtime guard, CVE-2024-45806).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InternalAddresses {
    ranges: Vec<(IpAddr, u8)>,
}

impl InternalAddresses {
    /// Ranges as (network, prefix length); a longer prefix than the family
    /// has is clamped.
    pub fn new(ranges: Vec<(IpAddr, u8)>) -> InternalAddresses {
        InternalAddresses { ranges }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 peer on a dual-stack socket arrives v4-mapped.
        let ip = ip.to_canonical();
        self.ranges.iter().any(|&(net, len)| match (ip, net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        })
    }
}

/// `internal_address_config.cidr_ranges`, checked as Envoy checks them
/// (`unix_sockets` needs nothing: legate listens on IP sockets only).
fn internal_addresses(
    config: Option<&http_connection_manager::InternalAddressConfig>,
) -> Result<InternalAddresses, String> {
    let mut ranges = Vec::new();
    for (i, r) in config.map_or(&[][..], |c| &c.cidr_ranges[..]).iter().enumerate() {
        let at = format!("internal_address_config.cidr_ranges[{i}]");
        let net: IpAddr = r
            .address_prefix
            .parse()
            .map_err(|_| format!("{at}.address_prefix: `{}` is not an IP address", r.address_prefix))?;
        let len = r.prefix_len.unwrap_or(0);
        let max = if net.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!(
                "{at}.prefix_len: {len} is longer than an {} address ({max} bits)",
                if net.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        ranges.push((net, len as u8));
    }
    Ok(InternalAddresses::new(ranges))
}

/// An HTTP/2 window size from the config, within what the protocol allows
/// (Envoy's documented range: 65,535 to 2^31-1).
fn h2_window(configured: Option<u32>, default: u32) -> u32 {
    configured.unwrap_or(default).clamp(65_535, (1 << 31) - 1)
}
