//! Listening sockets: one per worker per listener, with SO_REUSEPORT so the
//! kernel spreads connections across workers.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

pub struct SocketSet {
    /// The bound address (the real port when the config asked for port 0).
    pub local_addr: SocketAddr,
    pub sockets: Vec<TcpListener>,
}

fn one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `::` means IPv6 only in Envoy unless ipv4_compat is set.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds `n` sockets to `addr`. With port 0 the first picks the port and
/// the others bind to that same port.
pub fn bind(addr: SocketAddr, n: usize) -> std::io::Result<SocketSet> {
    let first = one(addr)?;
    let local_addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..n.max(1) {
        sockets.push(one(local_addr)?);
    }
    Ok(SocketSet { local_addr, sockets })
}
