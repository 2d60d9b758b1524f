// The example service of the front-proxy demo (the part Envoy's tutorial writes in Flask).
// Standard library only, so `rustc -O hello.rs` builds it anywhere cargo works.
//
//   hello [ADDR]   (default 0.0.0.0:8080; SERVICE_NAME=1 or 2 says which service it is)
//
// Every request gets one line: "Hello from behind legate (service N)! hostname: H
// resolvedhostname: IP". HTTP/1.1 with keep-alive; the sidecar in front of it speaks to it.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::{env, fs, thread};

fn hostname() -> String {
    env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| "localhost".into())
}

fn resolved(host: &str) -> String {
    match (host, 0).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .find(|a| a.is_ipv4())
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "unknown".into()),
        Err(_) => "unknown".into(),
    }
}

fn serve(stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let http10 = line.trim_end().ends_with("HTTP/1.0");
        let (mut length, mut close) = (0usize, http10);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim().to_ascii_lowercase();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "connection" => close = value == "close" || (http10 && value != "keep-alive"),
                _ => {}
            }
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
            body
        )?;
        if close {
            return Ok(());
        }
    }
}

fn main() {
    let addr = env::args().nth(1).unwrap_or_else(|| "0.0.0.0:8080".into());
    let service = env::var("SERVICE_NAME").unwrap_or_else(|_| "1".into());
    let host = hostname();
    let body = format!(
        "Hello from behind legate (service {service})! hostname: {host} resolvedhostname: {}\n",
        resolved(&host)
    );
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("hello: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    eprintln!("hello: service {service} listening on {addr}");
    for stream in listener.incoming().flatten() {
        let body = body.clone();
        thread::spawn(move || {
            let _ = serve(stream, &body);
        });
    }
}
