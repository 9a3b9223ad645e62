//! Group commit of audit rows: many concurrent releases hand their audit event to
//! one writer thread, which commits whatever has queued up in one transaction and
//! only then lets each of those requests answer. A release is never answered
//! before its audit row is durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditEvent, Store};

/// Largest batch committed at once.
const MAX_BATCH: usize = 256;

type Item = (AuditEvent, oneshot::Sender<bool>);

/// Handle to the audit writer thread.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Item>,
}

impl Journal {
    /// Starts the writer thread.
    pub fn start(store: Arc<Store>) -> Journal {
        let (tx, mut rx) = mpsc::channel::<Item>(4096);
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || {
                let mut batch: Vec<Item> = Vec::with_capacity(MAX_BATCH);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    let events: Vec<AuditEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
                    let ok = match store.append_audit(&events) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(error = %e, rows = events.len(), "audit commit failed");
                            false
                        }
                    };
                    for (_, done) in batch.drain(..) {
                        let _ = done.send(ok);
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the audit thread"));
        Journal { tx }
    }

    /// Records one event and waits until it is durable. False when it could not be written.
    pub async fn record(&self, event: AuditEvent) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send((event, done)).await.is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }
}
