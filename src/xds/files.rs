//! File-based xDS: `path_config_source` (and the deprecated `path`).
//!
//! The file is a `DiscoveryResponse` in YAML or JSON (`version_info` and
//! `resources` of `@type` …). Each read that differs from the last one is
//! parsed with the config loader and handed to the sink as one
//! state-of-the-world [`Update`] per subscribed type; a file that does not
//! parse, holds the wrong type or is missing goes to [`Sink::rejected`] and
//! the last good set stays in force (there is no ACK channel for files).
//!
//! Envoy reacts only to a rename into the watched path (or into
//! `watched_directory`). People replace files in more ways than that, so
//! legate watches *directories* — the file's parent, `watched_directory`, and
//! the directories its symlinks lead through — and treats any event there as
//! "maybe changed": after a short quiet period it re-reads the file and
//! compares bytes. That one rule covers an in-place write (`echo > f`,
//! editors), `sed -i` (temp file renamed over), `mv new f`, and the
//! Kubernetes ConfigMap swap (`f -> ..data/f`, `..data_tmp` renamed over
//! `..data`), without having to recognise any of them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{resource_name, Interest, Resource, ResourceType, Sink, Source, Subscriptions, Update};
use crate::config::error::{child, index};
use crate::config::{yaml, ConfigError, ErrorKind, XdsFile};

/// How long the watched directories must stay quiet before the file is
/// re-read: a writer's truncate-then-write, or a rename followed by the
/// removal of the old version, arrives as a burst of events and should
/// cost one read, of the finished file.
const QUIET: Duration = Duration::from_millis(100);

/// The longest a burst can postpone a re-read (a directory that never goes
/// quiet must not starve the subscription).
const MAX_DELAY: Duration = Duration::from_secs(1);

/// How often to retry while a directory to watch is missing (or inotify
/// refused a watch): the file may appear where no watch can see it yet.
const RETRY: Duration = Duration::from_secs(1);

/// A re-read even when no event came: inotify reports nothing for changes
/// made on another host of a network filesystem, and an identical read
/// costs one small file read and a compare.
const RESCAN: Duration = Duration::from_secs(10);

/// Follows at most this many symlinks when looking for directories to
/// watch (the kernel's own limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// Serves `source` (a [`Source::Path`]) for the types `interest` lists under
/// it, until the sender of `interest` is dropped.
///
/// Delivers the file at start and after every change of its content; runs
/// no watch while nothing is subscribed. Never calls `stream_state`: a file
/// has no connection to report.
pub async fn run(source: Source, sink: Arc<dyn Sink>, mut interest: watch::Receiver<Interest>) {
    let Source::Path {
        path,
        watched_directory,
    } = &source
    else {
        warn!(
            ?source,
            "xds::files::run was given a source that is not a file; it serves nothing"
        );
        return;
    };
    let wake = Arc::new(Notify::new());
    let mut dirs = DirWatch::new(Arc::clone(&wake));
    let mut file = FileState::default();
    let mut subs: Subscriptions = interest
        .borrow_and_update()
        .get(&source)
        .cloned()
        .unwrap_or_default();
    // Types to deliver on the next read even if the bytes did not change.
    let mut force: BTreeSet<ResourceType> = subs.keys().copied().collect();
    // (re-read at, first event of the burst)
    let mut debounce: Option<(Instant, Instant)> = None;
    let mut refresh = true;
    loop {
        if refresh {
            refresh = false;
            if subs.is_empty() {
                dirs.clear();
            } else {
                // Watch before reading, so that a change made during the
                // read is seen afterwards.
                dirs.reconcile(&watch_dirs(path, watched_directory.as_deref()));
                file.refresh(&source, path, &sink, &subs, &force).await;
            }
            force.clear();
        }

        let now = Instant::now();
        let debounce_at = debounce.map_or(now + RESCAN, |(at, _)| at);
        let poll_in = if subs.is_empty() {
            // Nothing to serve: only interest changes matter.
            Duration::from_secs(3600)
        } else if dirs.complete() {
            RESCAN
        } else {
            RETRY
        };
        tokio::select! {
            changed = interest.changed() => {
                if changed.is_err() {
                    debug!(path = %path.display(), "interest closed; file subscription stops");
                    return;
                }
                let new = interest.borrow_and_update().get(&source).cloned().unwrap_or_default();
                if new != subs {
                    force = changed_types(&subs, &new);
                    file.forget_except(&new);
                    subs = new;
                    refresh = true;
                }
            }
            () = wake.notified() => {
                let first = debounce.map_or(now, |(_, first)| first);
                debounce = Some(((now + QUIET).min(first + MAX_DELAY), first));
            }
            () = tokio::time::sleep_until(debounce_at), if debounce.is_some() => {
                debounce = None;
                refresh = true;
            }
            () = tokio::time::sleep(poll_in) => {
                refresh = true;
            }
        }
    }
}

/// The types whose subscription is new or changed from `old` to `new`:
/// they get the current file even if it did not change (a gRPC server
/// answers a changed subscription too).
pub fn changed_types(old: &Subscriptions, new: &Subscriptions) -> BTreeSet<ResourceType> {
    new.iter()
        .filter(|(ty, names)| old.get(*ty) != Some(*names))
        .map(|(ty, _)| *ty)
        .collect()
}

/// What this subscription last saw and delivered.
#[derive(Default)]
struct FileState {
    /// The last read: the bytes, or the error message. A read equal to it
    /// changes nothing (no re-delivery, no repeated rejection).
    last_read: Option<Result<Vec<u8>, String>>,
    /// Per type, the bytes of the last update the sink accepted: the
    /// content in force. Reading them again (a file restored after a bad
    /// edit, a file recreated as it was) delivers nothing.
    applied: HashMap<ResourceType, Vec<u8>>,
}

impl FileState {
    /// Reads the file and delivers it to the types that need it.
    async fn refresh(
        &mut self,
        source: &Source,
        path: &Path,
        sink: &Arc<dyn Sink>,
        subs: &Subscriptions,
        force: &BTreeSet<ResourceType>,
    ) {
        let read = read_file(path);
        let changed = self.last_read.as_ref() != Some(&read);
        let mut types: Vec<ResourceType> = subs
            .keys()
            .copied()
            .filter(|ty| changed || force.contains(ty))
            .collect();
        let bytes = match &read {
            Err(message) => {
                for ty in types {
                    warn!("{}: {message}; keeping the last good config", ty.short());
                    sink.rejected(source, ty, message);
                }
                self.last_read = Some(read);
                return;
            }
            Ok(bytes) => bytes.clone(),
        };
        self.last_read = Some(read);
        types.retain(|ty| force.contains(ty) || self.applied.get(ty) != Some(&bytes));
        if types.is_empty() {
            return;
        }
        // Parsing a large file and the sink's compile-and-publish are real
        // work: keep them off the runtime's threads.
        let (source, sink, path_buf) = (source.clone(), Arc::clone(sink), path.to_path_buf());
        let job = tokio::task::spawn_blocking(move || {
            let accepted = deliver(&source, sink.as_ref(), &path_buf, &bytes, &types);
            (bytes, accepted)
        });
        match job.await {
            Ok((bytes, accepted)) => {
                for ty in accepted {
                    self.applied.insert(ty, bytes.clone());
                }
            }
            Err(e) => warn!("{}: delivering the file failed: {e}", source_label(path)),
        }
    }

    /// Drops what is remembered for types no longer subscribed, so that a
    /// later subscription starts from the file, not from a stale record.
    fn forget_except(&mut self, subs: &Subscriptions) {
        self.applied.retain(|ty, _| subs.contains_key(ty));
    }
}

fn source_label(path: &Path) -> String {
    path.display().to_string()
}

/// The file's bytes, or the message to reject it with.
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        ConfigError::new(ErrorKind::Io, "", 0, format!("cannot read the file: {e}"))
            .in_file(&source_label(path))
            .to_string()
    })
}

/// Parses `bytes` (the content of `path`) once and hands each of `types`
/// its update: [`Sink::apply`] when the file has one for it, else
/// [`Sink::rejected`] with the loader's message. Returns the types whose
/// update the sink accepted.
pub fn deliver(
    source: &Source,
    sink: &dyn Sink,
    path: &Path,
    bytes: &[u8],
    types: &[ResourceType],
) -> Vec<ResourceType> {
    let name = source_label(path);
    let parsed = match parse_file(path, bytes) {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            for &ty in types {
                warn!("{}: {message}; keeping the last good config", ty.short());
                sink.rejected(source, ty, &message);
            }
            return Vec::new();
        }
    };
    for w in &parsed.file.warnings {
        warn!("{w}");
    }
    let mut accepted = Vec::new();
    for &ty in types {
        let update = match update_for(ty, &parsed) {
            Ok(u) => u,
            Err(e) => {
                let message = e.in_file(&name).to_string();
                warn!("{}: {message}; keeping the last good config", ty.short());
                sink.rejected(source, ty, &message);
                continue;
            }
        };
        let (count, version) = (update.resources.len(), update.version.clone());
        match sink.apply(source, update) {
            Ok(()) => {
                info!(
                    "{}: applied {count} resource(s) from {name}, version {version:?}",
                    ty.short()
                );
                accepted.push(ty);
            }
            Err(e) => warn!(
                "{}: {name} rejected: {e}; keeping the last good config",
                ty.short()
            ),
        }
    }
    accepted
}

/// A parsed file, with its text kept for the line numbers of errors found
/// after parsing.
pub struct ParsedFile {
    text: String,
    pub file: XdsFile,
}

/// Parses one read of `path` with the config loader (the same errors, with
/// file, line and field path, as a bootstrap gets).
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<ParsedFile, ConfigError> {
    let name = source_label(path);
    if !matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) {
        // The loader owns the rule (and the message) for which extensions
        // it reads; it rejects these before reading anything.
        return crate::config::load_xds_file(path).map(|file| ParsedFile {
            text: String::new(),
            file,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::new(ErrorKind::Syntax, "", 0, format!("not UTF-8 text: {e}")).in_file(&name)
    })?;
    if text.trim().is_empty() {
        // The loader reads an empty document as "no resources", which for
        // LDS and CDS removes everything. An empty file is far more often a
        // writer caught between truncate and write than a wish to remove
        // every listener, which `resources: []` still says.
        return Err(ConfigError::new(
            ErrorKind::Syntax,
            "",
            0,
            "the file is empty (write `resources: []` to remove every resource)",
        )
        .in_file(&name));
    }
    let mut file = crate::config::parse_xds_text(text).map_err(|e| e.in_file(&name))?;
    for w in &mut file.warnings {
        w.file.clone_from(&name);
    }
    Ok(ParsedFile {
        text: text.to_string(),
        file,
    })
}

/// The state-of-the-world update the file means for a `ty` subscription:
/// every resource must be a `ty`, with a name, each name once.
pub fn update_for(ty: ResourceType, parsed: &ParsedFile) -> Result<Update, ConfigError> {
    let version = parsed.file.version_info.clone();
    let name_field = match ty {
        ResourceType::ClusterLoadAssignment => "cluster_name",
        _ => "name",
    };
    let mut first_index: HashMap<String, usize> = HashMap::new();
    let mut resources = Vec::with_capacity(parsed.file.resources.len());
    for (i, any) in parsed.file.resources.iter().enumerate() {
        let at = index("resources", i);
        if ResourceType::from_type_url(&any.type_url) != Some(ty) {
            let field = child(&at, "@type");
            return Err(ConfigError::schema(
                &field,
                line_of(&parsed.text, i, "@type"),
                format!(
                    "`{}` in a file subscribed to for {}: every resource in it must have @type {}",
                    crate::config::validate::type_url_name(&any.type_url),
                    ty.short().to_uppercase(),
                    ty.type_url()
                ),
            ));
        }
        let name =
            resource_name(ty, any).map_err(|e| ConfigError::schema(&at, line_of(&parsed.text, i, ""), e))?;
        let field = child(&at, name_field);
        if name.is_empty() {
            return Err(ConfigError::invalid(
                &field,
                line_of(&parsed.text, i, ""),
                format!("a {} served by xDS needs a `{name_field}`", ty.message_name()),
            ));
        }
        if let Some(first) = first_index.get(&name) {
            return Err(ConfigError::invalid(
                &field,
                line_of(&parsed.text, i, name_field),
                format!("duplicate name `{name}` (also resources[{first}])"),
            ));
        }
        first_index.insert(name.clone(), i);
        resources.push(Resource {
            name,
            version: version.clone(),
            body: any.clone(),
        });
    }
    Ok(Update {
        ty,
        version,
        resources,
        removed: Vec::new(),
        state_of_the_world: true,
    })
}

/// The line of `resources[i]` (of its `key` when given and present) in
/// `text`; 0 when unknown. Re-parses the text: only errors need it.
fn line_of(text: &str, i: usize, key: &str) -> u64 {
    let Ok(root) = yaml::parse(text) else { return 0 };
    let Some(list) = root.get("resources") else {
        return 0;
    };
    let item = match &list.value {
        yaml::Value::Seq(items) => items.get(i),
        // The loader accepts a single mapping where a list is expected.
        yaml::Value::Map(_) if i == 0 => Some(list),
        _ => None,
    };
    let Some(item) = item else { return 0 };
    item.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.name == key))
        .map_or(item.line, |(k, _)| k.line)
}

/// The directories whose changes can change what `path` reads: its parent
/// (in-place writes, renames into place, a symlink replaced), the
/// configured `watched_directory`, and the directory of every symlink hop
/// and of the final target (a target edited in place elsewhere).
pub fn watch_dirs(path: &Path, watched_directory: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![parent_dir(path)];
    if let Some(w) = watched_directory {
        dirs.push(w.to_path_buf());
    }
    let mut hop = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        let Ok(target) = std::fs::read_link(&hop) else {
            break;
        };
        hop = parent_dir(&hop).join(target);
        dirs.push(parent_dir(&hop));
    }
    if let Some(parent) = std::fs::canonicalize(path).ok().as_deref().and_then(Path::parent) {
        dirs.push(parent.to_path_buf());
    }
    dirs
}

/// The directory holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Identifies a directory so that one deleted and recreated under the same
/// name is watched again (its old watch died with it).
type DirId = (u64, u64);

#[cfg(unix)]
fn dir_id(meta: &std::fs::Metadata) -> DirId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_id(_meta: &std::fs::Metadata) -> DirId {
    (0, 0)
}

/// The inotify watches of one subscription: non-recursive watches on
/// directories, keyed by canonical path (symlinked directories resolve to
/// one watch), each waking the subscription's loop.
struct DirWatch {
    wake: Arc<Notify>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashMap<PathBuf, DirId>,
    /// Every wanted directory is watched; otherwise the loop polls.
    complete: bool,
    /// A failure to watch was logged: the retries every RETRY stay quiet
    /// until watching works again.
    warned: bool,
}

impl DirWatch {
    fn new(wake: Arc<Notify>) -> DirWatch {
        DirWatch {
            wake,
            watcher: None,
            watched: HashMap::new(),
            complete: false,
            warned: false,
        }
    }

    fn complete(&self) -> bool {
        self.complete
    }

    /// Stops watching everything.
    fn clear(&mut self) {
        self.watcher = None;
        self.watched.clear();
        self.complete = false;
    }

    /// Watches exactly `dirs` (those that exist), dropping other watches.
    fn reconcile(&mut self, dirs: &[PathBuf]) {
        if self.watcher.is_none() {
            let wake = Arc::clone(&self.wake);
            let handler = move |event: notify::Result<notify::Event>| {
                if is_relevant(&event) {
                    // A permit is stored if the loop is busy: events coalesce.
                    wake.notify_one();
                }
            };
            match notify::recommended_watcher(handler) {
                Ok(w) => self.watcher = Some(w),
                Err(e) => self.failed(format_args!("cannot watch files ({e})")),
            }
        }
        let mut complete = true;
        let mut failures = Vec::new();
        let mut want: HashMap<PathBuf, DirId> = HashMap::new();
        for d in dirs {
            match std::fs::canonicalize(d).and_then(|c| std::fs::metadata(&c).map(|m| (c, m))) {
                Ok((canonical, meta)) if meta.is_dir() => {
                    want.insert(canonical, dir_id(&meta));
                }
                _ => complete = false,
            }
        }
        let Some(watcher) = self.watcher.as_mut() else {
            self.complete = false;
            return;
        };
        self.watched.retain(|dir, id| {
            if want.get(dir) == Some(id) {
                return true;
            }
            // Fails when the directory is gone, which is fine: so is its watch.
            let _ = watcher.unwatch(dir);
            false
        });
        for (dir, id) in want {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "watching");
                    self.watched.insert(dir, id);
                }
                Err(e) => {
                    failures.push(format!("cannot watch {}: {e}", dir.display()));
                    complete = false;
                }
            }
        }
        for f in failures {
            self.failed(format_args!("{f}"));
        }
        self.complete = complete;
        if complete {
            self.warned = false;
        }
    }

    /// Logs a failure to watch, at warn the first time of a spell of them.
    fn failed(&mut self, what: std::fmt::Arguments<'_>) {
        if self.warned {
            debug!("{what}");
        } else {
            warn!("{what}; polling every {}s until it works", RETRY.as_secs());
            self.warned = true;
        }
    }
}

/// Whether an event can mean the file changed. Opens and reads — ours
/// included, since we watch the directory we read from — cannot; a close
/// after writing can (it ends an in-place write). Errors and queue
/// overflows may hide a change, so they count.
fn is_relevant(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(e) => match e.kind {
            EventKind::Access(kind) => kind == AccessKind::Close(AccessMode::Write),
            _ => true,
        },
        Err(e) => {
            warn!("file watch error: {e}");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use prost::Message;

    use super::*;
    use crate::proto::envoy::config::cluster::v3::Cluster;

    /// What the sink was told, in order.
    #[derive(Clone, Debug)]
    enum Seen {
        Applied(Update),
        Rejected(ResourceType, String),
        StreamState,
    }

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<Seen>>,
        /// When set, `apply` records the update and answers this error.
        refuse: Mutex<Option<String>>,
    }

    impl Recorder {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }

        fn push(&self, s: Seen) {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(s);
            }
        }

        /// The versions of the applied updates of `ty`, in order.
        fn versions(&self, ty: ResourceType) -> Vec<String> {
            self.applied(ty).into_iter().map(|u| u.version).collect()
        }

        fn applied(&self, ty: ResourceType) -> Vec<Update> {
            self.seen()
                .into_iter()
                .filter_map(|s| match s {
                    Seen::Applied(u) if u.ty == ty => Some(u),
                    _ => None,
                })
                .collect()
        }

        fn rejections(&self) -> Vec<String> {
            self.seen()
                .into_iter()
                .filter_map(|s| match s {
                    Seen::Rejected(_, m) => Some(m),
                    _ => None,
                })
                .collect()
        }

        /// Polls until `done` holds, for at most a few seconds.
        async fn wait_for(&self, what: &str, done: impl Fn(&Recorder) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done(self) {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; the sink saw {:#?}",
                    self.seen()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    impl Sink for Recorder {
        fn apply(&self, _source: &Source, update: Update) -> Result<(), String> {
            self.push(Seen::Applied(update));
            match self.refuse.lock().map(|r| r.clone()) {
                Ok(Some(e)) => Err(e),
                _ => Ok(()),
            }
        }

        fn rejected(&self, _source: &Source, ty: ResourceType, error: &str) {
            self.push(Seen::Rejected(ty, error.to_string()));
        }

        fn stream_state(&self, _source: &Source, _connected: bool) {
            self.push(Seen::StreamState);
        }
    }

    /// A running subscription; dropping `interest` stops it.
    struct Running {
        rec: Arc<Recorder>,
        interest: watch::Sender<Interest>,
        task: tokio::task::JoinHandle<()>,
    }

    fn interest_for(source: &Source, types: &[ResourceType]) -> Interest {
        let subs: Subscriptions = types.iter().map(|t| (*t, None)).collect();
        BTreeMap::from([(source.clone(), subs)])
    }

    fn start(source: Source, types: &[ResourceType]) -> Running {
        let rec = Arc::new(Recorder::default());
        let (interest, rx) = watch::channel(interest_for(&source, types));
        let sink: Arc<dyn Sink> = rec.clone();
        let task = tokio::spawn(run(source, sink, rx));
        Running { rec, interest, task }
    }

    fn path_source(path: &Path) -> Source {
        Source::Path {
            path: path.to_path_buf(),
            watched_directory: None,
        }
    }

    /// A CDS file: one STATIC cluster per name.
    fn cds(version: &str, names: &[&str]) -> String {
        let mut s = format!("version_info: \"{version}\"\nresources:\n");
        for n in names {
            s += &format!(
                r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {n}
  type: STATIC
  load_assignment:
    cluster_name: {n}
    endpoints:
    - lb_endpoints:
      - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }} }}
"#
            );
        }
        s
    }

    const CDS: ResourceType = ResourceType::Cluster;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write test file");
    }

    async fn started_with_v1(source: Source) -> Running {
        let r = start(source, &[CDS]);
        r.rec
            .wait_for("the initial delivery", |r| r.versions(CDS) == ["1"])
            .await;
        r
    }

    #[tokio::test]
    async fn initial_delivery_is_one_state_of_the_world_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a", "b"]));
        let r = start(path_source(&f), &[CDS]);
        r.rec
            .wait_for("the initial delivery", |r| !r.applied(CDS).is_empty())
            .await;
        let u = &r.rec.applied(CDS)[0];
        assert!(u.state_of_the_world);
        assert_eq!(u.version, "1");
        assert!(u.removed.is_empty());
        let names: Vec<&str> = u.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(u
            .resources
            .iter()
            .all(|r| r.version == "1" && r.body.type_url == CDS.type_url()));
        assert!(r.rec.rejections().is_empty());
        assert!(!r.rec.seen().iter().any(|s| matches!(s, Seen::StreamState)));
    }

    #[tokio::test]
    async fn in_place_write_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = started_with_v1(path_source(&f)).await;
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
        let before = inode(&f);
        // Truncate and write the same inode, as `echo > f` and most editors do.
        write(&f, &cds("2", &["a", "b"]));
        assert_eq!(inode(&f), before, "the test must write in place");
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
        assert_eq!(r.rec.applied(CDS)[1].resources.len(), 2);
    }

    #[tokio::test]
    async fn sed_style_temp_file_renamed_over_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = started_with_v1(path_source(&f)).await;
        // `sed -i` writes a temp file beside the original and renames it over.
        let tmp = dir.path().join("sedX1b2c3");
        write(&tmp, &cds("2", &["a"]));
        std::fs::rename(&tmp, &f).expect("rename");
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
    }

    #[tokio::test]
    async fn mv_from_another_directory_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("conf");
        let staging = dir.path().join("staging");
        std::fs::create_dir(&conf).expect("mkdir");
        std::fs::create_dir(&staging).expect("mkdir");
        let f = conf.join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = started_with_v1(path_source(&f)).await;
        let new = staging.join("cds.yaml");
        write(&new, &cds("2", &["a"]));
        std::fs::rename(&new, &f).expect("mv");
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
    }

    /// Lays out a ConfigMap volume as the kubelet does:
    /// `cds.yaml -> ..data/cds.yaml`, `..data -> ..<timestamp>`.
    fn configmap(dir: &Path, text: &str) {
        let ts = dir.join("..2026_01_01_00_00_00.1");
        std::fs::create_dir(&ts).expect("mkdir");
        write(&ts.join("cds.yaml"), text);
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", dir.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/cds.yaml", dir.join("cds.yaml")).expect("symlink");
    }

    /// The kubelet's update: a new timestamped directory, `..data_tmp`
    /// pointing at it renamed over `..data`, the old directory removed.
    fn configmap_swap(dir: &Path, generation: u32, text: &str) {
        let name = format!("..2026_01_01_00_00_00.{generation}");
        let ts = dir.join(&name);
        std::fs::create_dir(&ts).expect("mkdir");
        write(&ts.join("cds.yaml"), text);
        let old = std::fs::read_link(dir.join("..data")).expect("readlink");
        std::os::unix::fs::symlink(&name, dir.join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
        std::fs::remove_dir_all(dir.join(old)).expect("rm old");
    }

    #[tokio::test]
    async fn configmap_symlink_swap_with_watched_directory_is_seen_every_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        configmap(dir.path(), &cds("1", &["a"]));
        let source = Source::Path {
            path: dir.path().join("cds.yaml"),
            watched_directory: Some(dir.path().to_path_buf()),
        };
        let r = started_with_v1(source).await;
        configmap_swap(dir.path(), 2, &cds("2", &["a"]));
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
        // The second swap proves the watches followed the first one.
        configmap_swap(dir.path(), 3, &cds("3", &["a"]));
        r.rec
            .wait_for("version 3", |r| r.versions(CDS) == ["1", "2", "3"])
            .await;
    }

    #[tokio::test]
    async fn configmap_symlink_swap_without_watched_directory_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        configmap(dir.path(), &cds("1", &["a"]));
        let r = started_with_v1(path_source(&dir.path().join("cds.yaml"))).await;
        configmap_swap(dir.path(), 2, &cds("2", &["a"]));
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
    }

    #[tokio::test]
    async fn symlink_target_edited_in_place_elsewhere_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (conf, data) = (dir.path().join("conf"), dir.path().join("data"));
        std::fs::create_dir(&conf).expect("mkdir");
        std::fs::create_dir(&data).expect("mkdir");
        write(&data.join("real.yaml"), &cds("1", &["a"]));
        let f = conf.join("cds.yaml");
        std::os::unix::fs::symlink(data.join("real.yaml"), &f).expect("symlink");
        let r = started_with_v1(path_source(&f)).await;
        // Nothing changes in conf/: only the target's directory sees this.
        write(&data.join("real.yaml"), &cds("2", &["a"]));
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
    }

    #[tokio::test]
    async fn broken_file_is_rejected_with_file_line_and_field_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = started_with_v1(path_source(&f)).await;
        // Line 6 of the file: a field Cluster does not have.
        let broken = cds("2", &["a"]).replacen("  type: STATIC\n", "  type: STATIC\n  no_such_field: 1\n", 1);
        assert_eq!(broken.lines().nth(5), Some("  no_such_field: 1"));
        write(&f, &broken);
        r.rec
            .wait_for("a rejection", |r| !r.rejections().is_empty())
            .await;
        let message = &r.rec.rejections()[0];
        assert!(message.contains(&format!("{}:6", f.display())), "{message}");
        assert!(message.contains("resources[0].no_such_field"), "{message}");
        assert!(matches!(r.rec.seen().last(), Some(Seen::Rejected(CDS, _))));
        assert_eq!(r.rec.versions(CDS), ["1"], "a rejected file must not be applied");
        // Fixed: applied again.
        write(&f, &cds("3", &["a"]));
        r.rec
            .wait_for("version 3", |r| r.versions(CDS) == ["1", "3"])
            .await;
        // Rejected once, not again on every later event or rescan.
        let broken = r
            .rec
            .rejections()
            .iter()
            .filter(|m| m.contains("no_such_field"))
            .count();
        assert_eq!(broken, 1);
    }

    #[tokio::test]
    async fn unchanged_rewrite_is_not_redelivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        let v1 = cds("1", &["a"]);
        write(&f, &v1);
        let r = started_with_v1(path_source(&f)).await;
        // Same bytes, in place and by rename: events, but nothing new.
        write(&f, &v1);
        let tmp = dir.path().join("cds.yaml.tmp");
        write(&tmp, &v1);
        std::fs::rename(&tmp, &f).expect("rename");
        // Longer than the quiet period, so these form a read of their own
        // before the next change.
        tokio::time::sleep(QUIET * 6).await;
        write(&f, &cds("2", &["a"]));
        r.rec
            .wait_for("version 2", |r| {
                r.versions(CDS).last().map(String::as_str) == Some("2")
            })
            .await;
        assert_eq!(r.rec.versions(CDS), ["1", "2"]);
    }

    #[tokio::test]
    async fn deleted_file_is_rejected_then_picked_up_when_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = started_with_v1(path_source(&f)).await;
        std::fs::remove_file(&f).expect("rm");
        r.rec
            .wait_for("a rejection", |r| !r.rejections().is_empty())
            .await;
        let message = &r.rec.rejections()[0];
        assert!(
            message.starts_with(&format!("{}: cannot read the file", f.display())),
            "{message}"
        );
        write(&f, &cds("2", &["a"]));
        r.rec
            .wait_for("version 2", |r| r.versions(CDS) == ["1", "2"])
            .await;
        let missing = r
            .rec
            .rejections()
            .iter()
            .filter(|m| m.contains("cannot read the file"))
            .count();
        assert_eq!(missing, 1);
    }

    #[tokio::test]
    async fn missing_at_start_is_rejected_then_picked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        let r = start(path_source(&f), &[CDS]);
        r.rec
            .wait_for("a rejection", |r| !r.rejections().is_empty())
            .await;
        write(&f, &cds("1", &["a"]));
        r.rec.wait_for("version 1", |r| r.versions(CDS) == ["1"]).await;
    }

    #[tokio::test]
    async fn missing_directory_is_picked_up_when_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("later").join("cds.yaml");
        let r = start(path_source(&f), &[CDS]);
        r.rec
            .wait_for("a rejection", |r| !r.rejections().is_empty())
            .await;
        std::fs::create_dir(dir.path().join("later")).expect("mkdir");
        write(&f, &cds("1", &["a"]));
        r.rec.wait_for("version 1", |r| r.versions(CDS) == ["1"]).await;
    }

    #[tokio::test]
    async fn resources_of_another_type_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("lds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = start(path_source(&f), &[ResourceType::Listener]);
        r.rec
            .wait_for("a rejection", |r| !r.rejections().is_empty())
            .await;
        let message = &r.rec.rejections()[0];
        assert!(
            message.starts_with(&format!("{}:3: resources[0].@type:", f.display())),
            "{message}"
        );
        assert!(
            message.contains("type.googleapis.com/envoy.config.listener.v3.Listener"),
            "{message}"
        );
        assert!(r.rec.applied(ResourceType::Listener).is_empty());
    }

    #[tokio::test]
    async fn stops_when_the_interest_sender_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let Running { rec, interest, task } = started_with_v1(path_source(&f)).await;
        drop(interest);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("run returns after the sender is dropped")
            .expect("run does not panic");
        assert_eq!(rec.versions(CDS), ["1"]);
    }

    #[tokio::test]
    async fn serves_a_type_once_it_is_subscribed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let source = path_source(&f);
        let rec = Arc::new(Recorder::default());
        let (tx, rx) = watch::channel(Interest::new());
        let sink: Arc<dyn Sink> = rec.clone();
        let _task = tokio::spawn(run(source.clone(), sink, rx));
        tokio::time::sleep(QUIET * 3).await;
        assert!(rec.seen().is_empty(), "nothing is subscribed yet");
        tx.send(interest_for(&source, &[CDS])).expect("send");
        rec.wait_for("version 1", |r| r.versions(CDS) == ["1"]).await;
        // An equal interest sent again is no change.
        tx.send(interest_for(&source, &[CDS])).expect("send");
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(rec.versions(CDS), ["1"]);
    }

    #[tokio::test]
    async fn an_update_the_sink_refuses_is_not_retried_until_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cds.yaml");
        write(&f, &cds("1", &["a"]));
        let r = started_with_v1(path_source(&f)).await;
        if let Ok(mut refuse) = r.rec.refuse.lock() {
            *refuse = Some("resources[0]: refused".into());
        }
        write(&f, &cds("2", &["a"]));
        r.rec
            .wait_for("version 2 offered", |r| r.versions(CDS) == ["1", "2"])
            .await;
        // The same bytes again: the sink's answer would not change.
        let tmp = dir.path().join("cds.yaml.tmp");
        write(&tmp, &cds("2", &["a"]));
        std::fs::rename(&tmp, &f).expect("rename");
        tokio::time::sleep(QUIET * 6).await;
        if let Ok(mut refuse) = r.rec.refuse.lock() {
            *refuse = None;
        }
        // Back to what is in force: nothing to deliver either.
        write(&f, &cds("1", &["a"]));
        tokio::time::sleep(QUIET * 6).await;
        write(&f, &cds("3", &["a"]));
        r.rec
            .wait_for("version 3", |r| {
                r.versions(CDS).last().map(String::as_str) == Some("3")
            })
            .await;
        assert_eq!(r.rec.versions(CDS), ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn each_subscribed_type_is_checked_on_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("x.yaml");
        write(&f, &cds("1", &["a"]));
        let r = start(path_source(&f), &[CDS, ResourceType::Listener]);
        r.rec
            .wait_for("both answers", |r| {
                r.versions(CDS) == ["1"] && !r.rejections().is_empty()
            })
            .await;
        assert!(r.rec.applied(ResourceType::Listener).is_empty());
        let listener_rejections: Vec<Seen> = r
            .rec
            .seen()
            .into_iter()
            .filter(|s| matches!(s, Seen::Rejected(ResourceType::Listener, _)))
            .collect();
        assert_eq!(listener_rejections.len(), 1, "{listener_rejections:?}");
    }

    fn conformance(name: &str) -> String {
        let dir = std::env::var("LEGATE_CONFORMANCE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/envoy-examples")
            });
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The upstream `dynamic-config-fs` example: its two files served from
    /// one directory, then its `verify.sh` step (`sed -i s/service1/service2/`
    /// on cds.yaml) seen, while lds.yaml is left alone.
    #[tokio::test]
    async fn upstream_dynamic_config_fs_example() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lds, cds_path) = (dir.path().join("lds.yaml"), dir.path().join("cds.yaml"));
        write(&lds, &conformance("dynamic-config-fs__configs-lds.yaml"));
        let cds_text = conformance("dynamic-config-fs__configs-cds.yaml");
        write(&cds_path, &cds_text);
        let l = start(path_source(&lds), &[ResourceType::Listener]);
        let c = start(path_source(&cds_path), &[CDS]);
        l.rec
            .wait_for("the listener", |r| r.applied(ResourceType::Listener).len() == 1)
            .await;
        c.rec.wait_for("the cluster", |r| r.applied(CDS).len() == 1).await;
        let names = |u: &Update| u.resources.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&l.rec.applied(ResourceType::Listener)[0]), ["listener_0"]);
        assert_eq!(names(&c.rec.applied(CDS)[0]), ["example_proxy_cluster"]);
        assert!(l.rec.rejections().is_empty() && c.rec.rejections().is_empty());

        // The real `sed -i` (Debian's sed is essential, so always there).
        let status = std::process::Command::new("sed")
            .args(["-i", "s/service1/service2/"])
            .arg(&cds_path)
            .status()
            .expect("run sed");
        assert!(status.success());
        c.rec
            .wait_for("the edited cluster", |r| r.applied(CDS).len() == 2)
            .await;
        let cluster =
            Cluster::decode(c.rec.applied(CDS)[1].resources[0].body.value.as_slice()).expect("decode");
        let address = format!("{:?}", cluster.load_assignment);
        assert!(
            address.contains("service2") && !address.contains("service1"),
            "{address}"
        );
        // The neighbour's change is not a change of lds.yaml.
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(l.rec.applied(ResourceType::Listener).len(), 1);
    }

    fn parsed(text: &str) -> Result<ParsedFile, ConfigError> {
        parse_file(Path::new("/etc/envoy/x.yaml"), text.as_bytes())
    }

    #[test]
    fn duplicate_names_are_rejected_with_the_line_of_the_second() {
        let p = parsed(&cds("1", &["a", "b", "a"])).expect("parses");
        let e = update_for(CDS, &p).expect_err("duplicate");
        assert_eq!(e.path, "resources[2].name");
        // Two header lines, 8 lines per cluster, `name` second.
        assert_eq!(e.line, 2 + 2 * 8 + 2);
        assert!(
            e.message.contains("duplicate name `a` (also resources[0])"),
            "{}",
            e.message
        );
    }

    #[test]
    fn cluster_load_assignments_are_named_by_cluster_name() {
        let text = r#"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: backend
"#;
        let u = update_for(
            ResourceType::ClusterLoadAssignment,
            &parsed(text).expect("parses"),
        )
        .expect("update");
        assert_eq!(u.resources[0].name, "backend");
        assert_eq!(u.version, "");
    }

    #[test]
    fn empty_and_bad_files_are_errors_naming_the_file() {
        let e = parsed(" \n").err().expect("empty is rejected");
        assert!(
            e.to_string().starts_with("/etc/envoy/x.yaml: the file is empty"),
            "{e}"
        );
        let e = parse_file(Path::new("/x.yaml"), b"\xff\xfe")
            .err()
            .expect("not UTF-8");
        assert!(e.to_string().starts_with("/x.yaml: "), "{e}");
        let e = parse_file(Path::new("/x.pb"), b"")
            .err()
            .expect("binary protobuf");
        assert!(e.to_string().starts_with("/x.pb: "), "{e}");
        // An explicit empty list is a valid state: no resources.
        let u = update_for(CDS, &parsed("resources: []\n").expect("parses")).expect("update");
        assert!(u.resources.is_empty() && u.state_of_the_world);
    }

    #[test]
    fn changed_types_are_new_or_renamed_subscriptions() {
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        let old: Subscriptions =
            BTreeMap::from([(CDS, None), (ResourceType::RouteConfiguration, names(&["r1"]))]);
        let mut new = old.clone();
        assert!(changed_types(&old, &new).is_empty());
        new.insert(ResourceType::RouteConfiguration, names(&["r1", "r2"]));
        new.insert(ResourceType::Listener, None);
        new.remove(&CDS);
        assert_eq!(
            changed_types(&old, &new),
            BTreeSet::from([ResourceType::Listener, ResourceType::RouteConfiguration])
        );
    }

    #[test]
    fn watch_dirs_follow_symlinks_to_their_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        configmap(dir.path(), &cds("1", &["a"]));
        let dirs = watch_dirs(&dir.path().join("cds.yaml"), None);
        let canonical: BTreeSet<PathBuf> = dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .collect();
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(
            canonical,
            BTreeSet::from([root.clone(), root.join("..2026_01_01_00_00_00.1")])
        );
        assert_eq!(parent_dir(Path::new("lds.yaml")), PathBuf::from("."));
    }
}
