//! The `wasmvisor:plugin/runtime` imports: what the host offers every guest.
//! Each goes to the instance's incarnation or through its child's [`Port`].
//!
//! [`Port`]: super::port::Port

use super::bindings::wasmvisor::plugin::runtime::Host;
use super::bindings::wasmvisor::plugin::types as wit;
use super::incarnation::MAX_PENDING;
use super::info::{Info, from_wit_reason};
use super::outbound;
use super::state::{InstanceState, Interrupted};
use crate::types::{
    Activate, CallError, CheckpointError, ChildError, ChildSpec, DEFAULT_SHUTDOWN_MS, Restart,
    StartError, StartOutcome,
};
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
        CallError::InitFailed(m) => wit::CallError::InitFailed(m),
        CallError::Unavailable(m) => wit::CallError::Unavailable(m),
    }
}

fn to_wit_start_error(e: StartError) -> wit::StartError {
    match e {
        StartError::AlreadyStarted(_) => wit::StartError::AlreadyStarted,
        StartError::UnknownPlugin(_) => wit::StartError::UnknownPlugin,
        StartError::MaxChildren(_) => wit::StartError::MaxChildren,
        StartError::Invalid(m) => wit::StartError::Invalid(m),
        StartError::InitFailed(m) => wit::StartError::InitFailed(m),
        StartError::Unavailable(m) => wit::StartError::Unavailable(m),
    }
}

impl InstanceState {
    /// Kills the instance when it holds too many of something; the guest
    /// cannot grow host memory without bound.
    fn check_pending(&mut self, held: usize, what: &str) -> wasmtime::Result<()> {
        if held >= MAX_PENDING {
            self.kill = Some(format!("more than {MAX_PENDING} pending {what}"));
            return Err(wasmtime::Error::new(Interrupted));
        }
        Ok(())
    }
}

impl Host for InstanceState {
    fn self_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.id.to_string())
    }

    async fn call(
        &mut self,
        to: String,
        msg: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::CallError>> {
        if to == *self.id {
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
        let reply = self.incarnation().port.call(&to, msg, timeout).await;
        Ok(reply.map_err(to_wit_call_error))
    }

    async fn cast(
        &mut self,
        to: String,
        msg: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::CallError>> {
        let sent = self.incarnation().port.cast(&to, msg).await;
        Ok(sent.map_err(to_wit_call_error))
    }

    fn reply(&mut self, reply_to: u64, msg: Vec<u8>) -> wasmtime::Result<bool> {
        Ok(match self.incarnation().replies.remove(&reply_to) {
            // A caller that timed out is gone: still answered, as far as
            // the guest can tell.
            Some(reply) => {
                let _ = reply.send(Ok(msg));
                true
            }
            None => false,
        })
    }

    fn send_after(&mut self, delay_ms: u64, msg: Vec<u8>) -> wasmtime::Result<u64> {
        let held = self.incarnation().timers.len();
        self.check_pending(held, "timers")?;
        let incarnation = self.incarnation();
        let timer = incarnation.port.next_id();
        let delay = Duration::from_millis(delay_ms);
        let task = incarnation.port.deliver_later(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Info::Timer { timer, msg }
        }));
        incarnation.timers.insert(timer, task);
        Ok(timer)
    }

    fn cancel_timer(&mut self, timer: u64) -> wasmtime::Result<bool> {
        Ok(match self.incarnation().timers.remove(&timer) {
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
    ) -> wasmtime::Result<Result<wit::StartOutcome, wit::StartError>> {
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
            activate: Activate::Eager,
        };
        let started = self.incarnation().port.start_child(spec).await;
        Ok(started
            .map(|outcome| match outcome {
                StartOutcome::Started => wit::StartOutcome::Started,
                StartOutcome::Ignored => wit::StartOutcome::Ignored,
            })
            .map_err(to_wit_start_error))
    }

    async fn stop_child(&mut self, id: String) -> wasmtime::Result<Result<(), wit::StopError>> {
        if id == *self.id {
            // Stopping waits for the child to finish its current message,
            // which is this one: `stop` is the way to stop oneself.
            return Ok(Err(wit::StopError::CallingSelf));
        }
        let stopped = self.incarnation().port.stop_child(&id).await;
        Ok(stopped.map_err(|e| match e {
            ChildError::NotFound(_) => wit::StopError::NotFound,
            // A stop is never refused for this; say the child is not there.
            ChildError::CannotHibernate(_) => wit::StopError::NotFound,
            // Its node does not answer: as far as this guest can reach, it
            // is not there (the WIT's stop-error has no other code).
            ChildError::Unavailable(_) => wit::StopError::NotFound,
        }))
    }

    fn monitor(&mut self, id: String) -> wasmtime::Result<u64> {
        let held = self.incarnation().monitors.len();
        self.check_pending(held, "monitors")?;
        let incarnation = self.incarnation();
        let reference = incarnation.port.next_id();
        incarnation.monitors.insert(reference, id.as_str().into());
        incarnation.port.monitor(&id, reference);
        Ok(reference)
    }

    fn demonitor(&mut self, reference: u64) -> wasmtime::Result<bool> {
        let incarnation = self.incarnation();
        Ok(match incarnation.monitors.remove(&reference) {
            Some(id) => incarnation.port.demonitor(&id, reference),
            None => false,
        })
    }

    async fn link(&mut self, id: String) -> wasmtime::Result<Result<(), wit::CallError>> {
        if id == *self.id {
            return Ok(Err(wit::CallError::Failed(
                "calling_self: a child cannot link to itself".into(),
            )));
        }
        let linked = self.incarnation().port.link(&id).await;
        Ok(linked.map_err(to_wit_call_error))
    }

    fn unlink(&mut self, id: String) -> wasmtime::Result<()> {
        self.incarnation().port.unlink(&id);
        Ok(())
    }

    fn trap_exits(&mut self, on: bool) -> wasmtime::Result<()> {
        self.incarnation().port.trap_exits(on);
        Ok(())
    }

    fn http_send_async(&mut self, request: wit::HttpRequest) -> wasmtime::Result<u64> {
        let held = self.incarnation().requests.len();
        self.check_pending(held, "HTTP requests")?;
        let fetch = self.http_policy().fetch(outbound::Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        });
        let incarnation = self.incarnation();
        let id = incarnation.port.next_id();
        let task = incarnation.port.deliver_later(Box::pin(async move {
            let result = fetch.await;
            Info::Http { id, result }
        }));
        incarnation.requests.insert(id, task);
        Ok(id)
    }

    fn publish(&mut self, topic: String, msg: Vec<u8>) -> wasmtime::Result<()> {
        self.incarnation().port.publish(&topic, Bytes::from(msg));
        Ok(())
    }

    fn subscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        let incarnation = self.incarnation();
        if !incarnation.subscriptions.iter().any(|t| **t == *topic) {
            let key = incarnation.port.subscribe(&topic);
            incarnation.subscriptions.push(key);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        let incarnation = self.incarnation();
        if let Some(i) = incarnation.subscriptions.iter().position(|t| **t == *topic) {
            let key = incarnation.subscriptions.swap_remove(i);
            incarnation.port.unsubscribe(&[key]);
        }
        Ok(())
    }

    fn stop(&mut self, reason: wit::ExitReason) -> wasmtime::Result<()> {
        self.stop_request = Some(from_wit_reason(reason));
        Ok(())
    }

    fn hibernate(&mut self) -> wasmtime::Result<()> {
        self.hibernate_request = true;
        Ok(())
    }

    async fn checkpoint(
        &mut self,
        state: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::CheckpointError>> {
        let stored = self.incarnation().port.checkpoint(state).await;
        Ok(stored.map_err(|e| match e {
            CheckpointError::TooLarge(kib) => wit::CheckpointError::TooLarge(kib),
            CheckpointError::NotDurable => wit::CheckpointError::NotDurable,
            CheckpointError::Unavailable(why) => wit::CheckpointError::Unavailable(why),
            e @ CheckpointError::Moved => wit::CheckpointError::Unavailable(e.to_string()),
        }))
    }

    fn log(&mut self, level: wit::LogLevel, msg: String) -> wasmtime::Result<()> {
        let child = &*self.id;
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
