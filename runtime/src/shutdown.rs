//! Stopping on SIGTERM or SIGINT within a bound.
//!
//! The signals are taken on a thread of their own, with its own small runtime, because the
//! daemon's runtime thread can be busy for a while: an apply holds the daemon's lock, and an
//! HTTP request that waits for that lock blocks the whole current-thread runtime. The
//! signal thread tells the main loop to stop (it finishes the step in progress, persists the
//! state and exits 0), and if the main loop has not exited when the bound has passed, it
//! abandons the apply in progress and exits 0 itself. Abandoning is safe: the state files
//! are replaced atomically after every apply, so they hold the last completed apply, and the
//! next start reconciles the device with the sources, applying only the difference. Either
//! way the datapath stays in place: the maps stay pinned and the programs attached.

use std::time::Duration;

/// How long a stop may take, from the signal to the exit.
pub const BOUND: Duration = Duration::from_secs(5);

/// A stop request, seen by the main loop.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until a stop is asked for.
    pub async fn wait(&mut self) {
        // An error means the signal thread ended, which it does only by exiting the process.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// Starts the signal thread; returns once SIGTERM and SIGINT are taken (from then on they
/// no longer end the process at once). `on_stop` is called on the signal thread when the
/// first signal arrives, before the main loop is told (the daemon uses it to make a running
/// step stop taking changes).
pub fn on_signals(on_stop: impl FnOnce() + Send + 'static) -> anyhow::Result<Stop> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("pipecd-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (mut term, mut int) = match (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    (Ok(t), Ok(i)) => (t, i),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(
                    signal = name,
                    bound_ms = BOUND.as_millis() as u64,
                    "stopping: finishing the apply in progress, then persisting the state"
                );
                on_stop();
                let _ = tx.send(true);
                tokio::time::sleep(BOUND).await;
                tracing::warn!(
                    "the apply in progress did not finish in time: abandoned; the state \
                     files hold the last completed apply and the next start reconciles"
                );
                std::process::exit(0);
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the signal thread did not start"))??;
    Ok(Stop(rx))
}
