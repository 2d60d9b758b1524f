//! `--xds-cache DIR`: the last complete control-plane config on disk, so a
//! sidecar that restarts while its control plane is down serves what it
//! served before instead of only the fallback (Envoy's missing
//! "fail-static").
//!
//! One file, replaced atomically (temp file, fsync, rename, fsync of the
//! directory; file 0600, directory 0700):
//!
//! ```text
//! "legate-xds-cache 1\n"  body length (u64 LE)  xxh64 of the body (u64 LE)  body
//! body = length-delimited DeltaDiscoveryResponses:
//!   1. a header: type_url "legate.xds-cache.header", system_version_info = node id,
//!      one Resource per control-plane server (its name);
//!   2. one per resource type, in apply order (CDS, EDS, LDS, RDS):
//!      type_url, system_version_info = the type's version, the resources
//!      with their names and versions.
//! ```
//!
//! The checksum makes a truncated or corrupt file an error, never a partial
//! config.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use super::{Resource, ResourceType};
use crate::proto::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource as PResource};

pub const FILE: &str = "xds-cache.bin";
const MAGIC: &[u8] = b"legate-xds-cache 1\n";
const HEADER_TYPE: &str = "legate.xds-cache.header";

/// One cached config: whose it is and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Cached {
    pub node_id: String,
    pub servers: Vec<String>,
    /// Per type, in apply order: its version and its resources.
    pub types: Vec<(ResourceType, String, Vec<Resource>)>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn encode(c: &Cached) -> Vec<u8> {
    let mut body = Vec::new();
    let header = DeltaDiscoveryResponse {
        type_url: HEADER_TYPE.into(),
        system_version_info: c.node_id.clone(),
        resources: c
            .servers
            .iter()
            .map(|s| PResource {
                name: s.clone(),
                ..PResource::default()
            })
            .collect(),
        ..DeltaDiscoveryResponse::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.encode_length_delimited(&mut body);
    for (ty, version, resources) in &c.types {
        let msg = DeltaDiscoveryResponse {
            type_url: ty.type_url().into(),
            system_version_info: version.clone(),
            resources: resources
                .iter()
                .map(|r| PResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..PResource::default()
                })
                .collect(),
            ..DeltaDiscoveryResponse::default()
        };
        let _ = msg.encode_length_delimited(&mut body);
    }
    let mut out = Vec::with_capacity(body.len() + MAGIC.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh64::xxh64(&body, 0).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(bytes: &[u8]) -> Result<Cached, String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a legate xDS cache (bad magic)")?;
    if rest.len() < 16 {
        return Err("truncated header".into());
    }
    let (len, rest) = rest.split_at(8);
    let (sum, body) = rest.split_at(8);
    let len = u64::from_le_bytes(len.try_into().map_err(|_| "bad length")?);
    let sum = u64::from_le_bytes(sum.try_into().map_err(|_| "bad checksum")?);
    if body.len() as u64 != len {
        return Err(format!("truncated: {} bytes of {len}", body.len()));
    }
    if xxhash_rust::xxh64::xxh64(body, 0) != sum {
        return Err("checksum mismatch (corrupt file)".into());
    }
    let mut buf = body;
    let header = DeltaDiscoveryResponse::decode_length_delimited(&mut buf).map_err(|e| e.to_string())?;
    if header.type_url != HEADER_TYPE {
        return Err("missing header".into());
    }
    let mut types = Vec::new();
    while !buf.is_empty() {
        let msg = DeltaDiscoveryResponse::decode_length_delimited(&mut buf).map_err(|e| e.to_string())?;
        let ty = ResourceType::from_type_url(&msg.type_url)
            .ok_or_else(|| format!("unknown type `{}`", msg.type_url))?;
        let resources = msg
            .resources
            .into_iter()
            .map(|r| {
                let body = r
                    .resource
                    .ok_or_else(|| format!("resource {} has no body", r.name))?;
                Ok(Resource {
                    name: r.name,
                    version: r.version,
                    body,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        types.push((ty, msg.system_version_info, resources));
    }
    Ok(Cached {
        node_id: header.system_version_info,
        servers: header.resources.into_iter().map(|r| r.name).collect(),
        types,
    })
}

/// Writes `c` to `dir` atomically.
pub fn save(dir: &Path, c: &Cached) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    } else if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        // A directory legate does not own (a Kubernetes emptyDir's root):
        // the file itself is still 0600.
        tracing::debug!(
            "xds cache: cannot make {} 0700 ({e}); using it as it is",
            dir.display()
        );
    }
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&encode(c))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path(dir))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the cache in `dir`: `Ok(None)` when there is none, `Err` (with
/// why) when it is unreadable, truncated or corrupt.
pub fn load(dir: &Path) -> Result<Option<Cached>, String> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => decode(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cached {
        Cached {
            node_id: "sidecar-1".into(),
            servers: vec!["127.0.0.1:18000".into(), "cp2:18000".into()],
            types: vec![(
                ResourceType::Cluster,
                "7".into(),
                vec![Resource {
                    name: "c1".into(),
                    version: "7".into(),
                    body: prost_types::Any {
                        type_url: ResourceType::Cluster.type_url().into(),
                        value: vec![10, 2, b'c', b'1'],
                    },
                }],
            )],
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let c = sample();
        let bytes = encode(&c);
        assert_eq!(decode(&bytes).unwrap(), c);
        // Truncated anywhere, or one byte flipped: an error, never a config.
        for cut in [0, 5, MAGIC.len() + 3, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
    }

    #[test]
    fn save_is_private_and_load_reads_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(load(&cache).unwrap(), None);
        save(&cache, &sample()).unwrap();
        assert_eq!(load(&cache).unwrap(), Some(sample()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&path(&cache)), 0o600);
        std::fs::write(path(&cache), b"garbage").unwrap();
        assert!(load(&cache).is_err());
    }
}
