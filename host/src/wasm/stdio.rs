//! Guest stdout and stderr become log lines tagged with the instance id. Lines
//! are logged escaped (`{:?}`), so a guest cannot inject terminal escapes or
//! fake log lines.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 4096;

struct LineBuffer {
    id: Arc<str>,
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineBuffer {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..pos]);
            self.emit();
            bytes = &bytes[pos + 1..];
        }
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            self.emit();
            self.pending = rest;
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        tracing::info!(target: "wasmvisor::guest", child = %self.id, stream = self.stream, "{line:?}");
        self.pending.clear();
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        // The instance is gone: its last, unterminated line is still output.
        if !self.pending.is_empty() {
            self.emit();
        }
    }
}

/// One of an instance's output streams. Every handle the guest opens shares
/// the line buffer, so a line written in pieces is logged whole.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<LineBuffer>>);

impl GuestOutput {
    pub(crate) fn new(id: Arc<str>, stream: &'static str) -> Self {
        GuestOutput(Arc::new(Mutex::new(LineBuffer {
            id,
            stream,
            pending: Vec::new(),
        })))
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(bytes);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
