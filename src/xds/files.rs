//! (placeholder until the file watcher lands)
use std::sync::Arc;

use tokio::sync::watch;

use super::{Interest, Sink, Source};

pub async fn run(_source: Source, _sink: Arc<dyn Sink>, _interest: watch::Receiver<Interest>) {}
