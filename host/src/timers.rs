//! `send-after` / `cancel-timer` (OTP's `Process.send_after`). A timer is a
//! sleeping task owned by the instance that set it: dropping the instance
//! aborts its timers, and a timer message that was already queued is dropped
//! at delivery because the instance that set it is gone (see
//! `Instance::handle_info`).

use crate::address::InfoMsg;
use crate::instance::{InstanceState, Interrupted, MAX_TIMERS};
use std::time::Duration;

/// Sets a timer and returns its reference.
pub(crate) fn send_after(
    state: &mut InstanceState,
    delay_ms: u64,
    msg: Vec<u8>,
) -> wasmtime::Result<u64> {
    if state.timers.len() >= MAX_TIMERS {
        state.kill = Some(format!("more than {MAX_TIMERS} pending timers"));
        return Err(wasmtime::Error::new(Interrupted));
    }
    let timer = state.cell.next_timer_id();
    let cell = state.cell.clone();
    let generation = state.generation;
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        cell.post_info(generation, InfoMsg::Timer { timer, msg });
    });
    state.timers.insert(timer, task.abort_handle());
    Ok(timer)
}

/// Cancels a timer; true when it had not been delivered yet.
pub(crate) fn cancel(state: &mut InstanceState, timer: u64) -> bool {
    match state.timers.remove(&timer) {
        Some(task) => {
            task.abort();
            true
        }
        None => false,
    }
}
