//! The bar `wasmvisor run` draws on a terminal while its start compiles
//! plugins or restores stored children, and the log writer that keeps log
//! lines from tearing it.

use crate::host::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

/// Fewer items than this finish too soon for a bar to help.
const MIN_ITEMS: usize = 3;

/// The bar being drawn, which log lines step around.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// One bar per stage of a host start.
#[derive(Default)]
pub(super) struct StartBar {
    stage: Mutex<Option<&'static str>>,
}

impl StartBar {
    pub(super) fn update(&self, progress: Progress) {
        let (stage, done, total) = match progress {
            Progress::Compiling { done, total } => ("compiling plugins", done, total),
            Progress::Restoring { done, total } => ("restoring children", done, total),
        };
        if total < MIN_ITEMS {
            return;
        }
        let mut current = self.stage.lock().unwrap_or_else(|e| e.into_inner());
        let mut bar = active();
        if *current != Some(stage) {
            if let Some(old) = bar.take() {
                old.finish_and_clear();
            }
            let new =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            {
                new.set_style(style.progress_chars("=> "));
            }
            new.set_message(stage);
            *bar = Some(new);
            *current = Some(stage);
        }
        if let Some(b) = bar.as_ref() {
            b.set_position(done as u64);
            if done >= total {
                b.finish_and_clear();
                *bar = None;
            }
        }
    }

    /// Clears a bar a failed start left behind.
    pub(super) fn finish(&self) {
        if let Some(bar) = active().take() {
            bar.finish_and_clear();
        }
    }
}

/// stderr, with the bar (if one is drawn) cleared around each log line.
pub(super) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = active().clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}
