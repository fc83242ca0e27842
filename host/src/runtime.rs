//! The `wasmvisor:plugin/runtime` imports: what the host offers every guest.

use crate::bindings::wasmvisor::plugin::runtime::Host;
use crate::bindings::wasmvisor::plugin::types as wit;
use crate::instance::{InstanceState, from_wit_reason};
use crate::timers;
use crate::types::{CallError, ChildSpec, DEFAULT_SHUTDOWN_MS, Restart};
use bytes::Bytes;
use std::time::Duration;

/// `call`'s timeout when the guest passes 0.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(5_000);

impl wit::Host for InstanceState {}

fn to_wit_error(e: CallError) -> wit::CallError {
    match e {
        CallError::NotFound => wit::CallError::NotFound,
        CallError::Timeout => wit::CallError::Timeout,
        CallError::Trapped(m) => wit::CallError::Trapped(m),
        CallError::Killed(m) => wit::CallError::Killed(m),
        CallError::MailboxFull => wit::CallError::MailboxFull,
        CallError::Failed(m) => wit::CallError::Failed(m),
    }
}

impl Host for InstanceState {
    fn self_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.cell.id.to_string())
    }

    async fn call(
        &mut self,
        to: String,
        msg: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CallError>> {
        if to == *self.cell.id {
            // The caller is the only one who could answer: it would wait for
            // itself until the timeout (OTP exits with `calling_self`).
            return Ok(Err(wit::CallError::Failed(
                "calling_self: a child cannot call itself".into(),
            )));
        }
        let timeout = match timeout_ms {
            0 => DEFAULT_CALL_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        let result = match self.host.registry.get(&to) {
            Some(target) => target.call(msg, timeout).await,
            None => Err(CallError::NotFound),
        };
        Ok(result.map_err(to_wit_error))
    }

    fn cast(&mut self, to: String, msg: Vec<u8>) -> wasmtime::Result<Result<(), wit::CallError>> {
        let result = match self.host.registry.get(&to) {
            Some(target) => target.cast(msg),
            None => Err(CallError::NotFound),
        };
        Ok(result.map_err(to_wit_error))
    }

    fn send_after(&mut self, delay_ms: u64, msg: Vec<u8>) -> wasmtime::Result<u64> {
        timers::send_after(self, delay_ms, msg)
    }

    fn cancel_timer(&mut self, timer: u64) -> wasmtime::Result<bool> {
        Ok(timers::cancel(self, timer))
    }

    async fn start_child(&mut self, spec: wit::ChildSpec) -> wasmtime::Result<Result<(), String>> {
        let spec = ChildSpec {
            id: spec.id,
            plugin: spec.plugin,
            args: Bytes::from(spec.args),
            restart: match spec.restart {
                wit::Restart::Permanent => Restart::Permanent,
                wit::Restart::Transient => Restart::Transient,
                wit::Restart::Temporary => Restart::Temporary,
            },
            shutdown_ms: match spec.shutdown_ms {
                0 => DEFAULT_SHUTDOWN_MS,
                ms => ms,
            },
        };
        let result = self.host.start_child(spec).await;
        Ok(result.map(|_| ()).map_err(|e| e.to_string()))
    }

    async fn stop_child(&mut self, id: String) -> wasmtime::Result<Result<(), String>> {
        if id == *self.cell.id {
            // Stopping waits for the child to finish its current message,
            // which is this one.
            return Ok(Err(
                "calling_self: use stop() to stop the calling instance".into()
            ));
        }
        Ok(self.host.stop_child(&id).await.map_err(|e| e.to_string()))
    }

    fn monitor(&mut self, id: String) -> wasmtime::Result<()> {
        match self.host.registry.get(&id) {
            Some(target) => target.monitor(&self.cell, self.generation),
            None => self.cell.post_info(
                self.generation,
                crate::address::InfoMsg::Down {
                    id: id.into(),
                    reason: crate::types::ExitReason::Noproc,
                },
            ),
        }
        Ok(())
    }

    fn publish(&mut self, topic: String, msg: Vec<u8>) -> wasmtime::Result<()> {
        self.host.publish(&topic, Bytes::from(msg));
        Ok(())
    }

    fn subscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        if self.subscriptions.iter().any(|t| **t == *topic) {
            return Ok(());
        }
        let key = self
            .host
            .topics
            .subscribe(&topic, &self.cell, self.generation);
        self.subscriptions.push(key);
        Ok(())
    }

    fn unsubscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        if let Some(i) = self.subscriptions.iter().position(|t| **t == *topic) {
            let key = self.subscriptions.swap_remove(i);
            self.host.topics.unsubscribe(
                &[key],
                std::sync::Arc::as_ptr(&self.cell),
                self.generation,
            );
        }
        Ok(())
    }

    fn stop(&mut self, reason: wit::ExitReason) -> wasmtime::Result<()> {
        self.stop_request = Some(from_wit_reason(reason));
        Ok(())
    }

    fn log(&mut self, level: wit::LogLevel, msg: String) -> wasmtime::Result<()> {
        let child = &*self.cell.id;
        match level {
            wit::LogLevel::Trace => tracing::trace!(target: "wasmvisor::guest", child, "{msg:?}"),
            wit::LogLevel::Debug => tracing::debug!(target: "wasmvisor::guest", child, "{msg:?}"),
            wit::LogLevel::Info => tracing::info!(target: "wasmvisor::guest", child, "{msg:?}"),
            wit::LogLevel::Warn => tracing::warn!(target: "wasmvisor::guest", child, "{msg:?}"),
            wit::LogLevel::Error => {
                tracing::error!(target: "wasmvisor::guest", child, "{msg:?}");
                self.last_error_log = Some(msg);
            }
        }
        Ok(())
    }
}
