//! The `wasmvisor:plugin/runtime` imports: what the host offers every guest.
//! Each goes to the instance's own state or through its child's [`Port`].

use super::bindings::wasmvisor::plugin::runtime::Host;
use super::bindings::wasmvisor::plugin::types as wit;
use super::instance::from_wit_reason;
use super::state::{InstanceState, Interrupted, MAX_TIMERS};
use crate::types::{CallError, ChildError, ChildSpec, DEFAULT_SHUTDOWN_MS, Restart, StartError};
use bytes::Bytes;
use std::time::Duration;

/// `call`'s timeout when the guest passes 0.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(5_000);

impl wit::Host for InstanceState {}

fn to_wit_call_error(e: CallError) -> wit::CallError {
    match e {
        CallError::NotFound => wit::CallError::NotFound,
        CallError::Timeout => wit::CallError::Timeout,
        CallError::Trapped(m) => wit::CallError::Trapped(m),
        CallError::Killed(m) => wit::CallError::Killed(m),
        CallError::MailboxFull => wit::CallError::MailboxFull,
        CallError::Failed(m) => wit::CallError::Failed(m),
    }
}

fn to_wit_start_error(e: StartError) -> wit::StartError {
    match e {
        StartError::AlreadyStarted(_) => wit::StartError::AlreadyStarted,
        StartError::UnknownPlugin(_) => wit::StartError::UnknownPlugin,
        StartError::Invalid(m) => wit::StartError::Invalid(m),
        StartError::InitFailed(m) => wit::StartError::InitFailed(m),
        StartError::Unavailable(m) => wit::StartError::Unavailable(m),
    }
}

impl Host for InstanceState {
    fn self_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.port.id().to_string())
    }

    async fn call(
        &mut self,
        to: String,
        msg: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CallError>> {
        if to == **self.port.id() {
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
        let reply = self.port.call(&to, msg, timeout).await;
        Ok(reply.map_err(to_wit_call_error))
    }

    fn cast(&mut self, to: String, msg: Vec<u8>) -> wasmtime::Result<Result<(), wit::CallError>> {
        Ok(self.port.cast(&to, msg).map_err(to_wit_call_error))
    }

    fn send_after(&mut self, delay_ms: u64, msg: Vec<u8>) -> wasmtime::Result<u64> {
        if self.timers.len() >= MAX_TIMERS {
            self.kill = Some(format!("more than {MAX_TIMERS} pending timers"));
            return Err(wasmtime::Error::new(Interrupted));
        }
        let timer = self.port.next_timer();
        let task = self
            .port
            .send_after(timer, Duration::from_millis(delay_ms), msg);
        self.timers.insert(timer, task);
        Ok(timer)
    }

    fn cancel_timer(&mut self, timer: u64) -> wasmtime::Result<bool> {
        Ok(match self.timers.remove(&timer) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        })
    }

    async fn start_child(
        &mut self,
        spec: wit::ChildSpec,
    ) -> wasmtime::Result<Result<(), wit::StartError>> {
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
        let started = self.port.start_child(spec).await;
        Ok(started.map_err(to_wit_start_error))
    }

    async fn stop_child(&mut self, id: String) -> wasmtime::Result<Result<(), wit::StopError>> {
        if id == **self.port.id() {
            // Stopping waits for the child to finish its current message,
            // which is this one: `stop` is the way to stop oneself.
            return Ok(Err(wit::StopError::CallingSelf));
        }
        let stopped = self.port.stop_child(&id).await;
        Ok(stopped.map_err(|e| match e {
            ChildError::NotFound(_) => wit::StopError::NotFound,
        }))
    }

    fn monitor(&mut self, id: String) -> wasmtime::Result<()> {
        self.port.monitor(&id);
        Ok(())
    }

    fn publish(&mut self, topic: String, msg: Vec<u8>) -> wasmtime::Result<()> {
        self.port.publish(&topic, Bytes::from(msg));
        Ok(())
    }

    fn subscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        if !self.subscriptions.iter().any(|t| **t == *topic) {
            let key = self.port.subscribe(&topic);
            self.subscriptions.push(key);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        if let Some(i) = self.subscriptions.iter().position(|t| **t == *topic) {
            let key = self.subscriptions.swap_remove(i);
            self.port.unsubscribe(&[key]);
        }
        Ok(())
    }

    fn stop(&mut self, reason: wit::ExitReason) -> wasmtime::Result<()> {
        self.stop_request = Some(from_wit_reason(reason));
        Ok(())
    }

    fn log(&mut self, level: wit::LogLevel, msg: String) -> wasmtime::Result<()> {
        let child = &**self.port.id();
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
