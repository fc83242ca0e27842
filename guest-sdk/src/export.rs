//! The glue between the WIT exports and a [`Plugin`]: what `export!` expands
//! to calls into here.

use crate::bindings::wasmvisor::plugin::types as wit;
use crate::http::{RequestId, Response};
use crate::message::{Message, decode_bytes};
use crate::plugin::{Info, Plugin};
use crate::runtime::{Level, MonitorRef, ReplyTo, from_wit_reason, log};
use std::cell::RefCell;
use std::thread::LocalKey;

/// Exports a [`Plugin`] implementation as the component's `plugin` world.
///
/// Call it once, at the top level of the plugin crate:
///
/// ```ignore
/// wasmvisor_sdk::export!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                // The plugin value of this instance, filled by `init`.
                static __WASMVISOR_SLOT: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __WasmvisorExport;

            impl $crate::bindings::Guest for __WasmvisorExport {
                fn init(args: ::std::vec::Vec<u8>) -> ::core::result::Result<$crate::bindings::InitOutcome, ::std::string::String> {
                    $crate::__private::init(&__WASMVISOR_SLOT, args)
                }
                fn handle_continue(msg: ::std::vec::Vec<u8>) {
                    $crate::__private::handle_continue(&__WASMVISOR_SLOT, msg)
                }
                fn handle_call(msg: ::std::vec::Vec<u8>, reply_to: u64) -> ::core::option::Option<::std::vec::Vec<u8>> {
                    $crate::__private::handle_call(&__WASMVISOR_SLOT, msg, reply_to)
                }
                fn handle_cast(msg: ::std::vec::Vec<u8>) {
                    $crate::__private::handle_cast(&__WASMVISOR_SLOT, msg)
                }
                fn handle_info(info: $crate::bindings::Info) {
                    $crate::__private::handle_info(&__WASMVISOR_SLOT, info)
                }
                fn terminate(reason: $crate::bindings::ExitReason) {
                    $crate::__private::terminate(&__WASMVISOR_SLOT, reason)
                }
                fn snapshot() -> ::core::option::Option<::std::vec::Vec<u8>> {
                    $crate::__private::snapshot(&__WASMVISOR_SLOT)
                }
                fn restore(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::restore(&__WASMVISOR_SLOT, state)
                }
            }

            $crate::bindings::__export_plugin_world!(__WasmvisorExport with_types_in $crate::bindings);
        };
    };
}

/// The plugin value of this instance, once `init` succeeded: a
/// `thread_local!` that `export!` declares. A wasm instance runs one callback
/// at a time on its one thread, so the value is only ever borrowed by the
/// callback that is running.
pub type Slot<P> = LocalKey<RefCell<Option<P>>>;

/// Runs `f` on the plugin in `slot`.
fn with<P: 'static, R>(slot: &'static Slot<P>, f: impl FnOnce(&mut P) -> R) -> R {
    slot.with_borrow_mut(|plugin| {
        // The host calls `init` before anything else and never calls an
        // instance whose `init` failed, so an empty slot is a host bug: trap.
        let plugin = plugin
            .as_mut()
            .expect("wasmvisor-sdk: a callback ran before init succeeded");
        f(plugin)
    })
}

fn install_panic_hook() {
    // The default hook writes to stderr, which the host turns into log lines
    // anyway; this hook also hands the message to the host in one piece, so a
    // trap caused by a panic reports *why* instead of "unreachable executed".
    std::panic::set_hook(Box::new(|info| {
        log(Level::Error, &format!("panic: {info}"));
    }));
}

/// What `init` asked for besides succeeding.
enum Asked {
    Continue(Message),
    Ignore,
}

std::thread_local! {
    /// Set by [`continue_with`] or [`ignore`] during `init`.
    static ASKED: RefCell<Option<Asked>> = const { RefCell::new(None) };
}

/// Called in [`Plugin::init`]: once `init` returns `Ok`, run
/// [`Plugin::handle_continue`] with `msg` first, after the starter got its
/// answer (OTP's `{:ok, state, {:continue, msg}}`). Outside `init` it does
/// nothing.
pub fn continue_with(msg: &impl serde::Serialize) {
    ASKED.set(Some(Asked::Continue(Message::encode(msg))));
}

/// Called in [`Plugin::init`]: once `init` returns `Ok`, keep no child (OTP's
/// `:ignore`). The start answers `ignored` and the id stays free; a child
/// from the config is listed as `ignored`. Outside `init` it does nothing.
pub fn ignore() {
    ASKED.set(Some(Asked::Ignore));
}

/// `init` export.
pub fn init<P: Plugin>(slot: &'static Slot<P>, args: Vec<u8>) -> Result<wit::InitOutcome, String> {
    install_panic_hook();
    ASKED.set(None);
    let args: P::Args = decode_bytes(&args).map_err(|e| format!("invalid args: {e}"))?;
    let mut plugin = P::default();
    plugin.init(args)?;
    slot.set(Some(plugin));
    Ok(match ASKED.take() {
        None => wit::InitOutcome::Ready,
        Some(Asked::Continue(msg)) => wit::InitOutcome::Continue(msg.into_bytes()),
        Some(Asked::Ignore) => wit::InitOutcome::Ignore,
    })
}

/// `handle-continue` export.
pub fn handle_continue<P: Plugin>(slot: &'static Slot<P>, msg: Vec<u8>) {
    with(slot, |p| p.handle_continue(Message::from_bytes(msg)))
}

/// `handle-call` export. A request that does not decode is answered with
/// `{"error": "bad_message", ...}` instead of reaching the plugin.
pub fn handle_call<P: Plugin>(
    slot: &'static Slot<P>,
    msg: Vec<u8>,
    reply_to: u64,
) -> Option<Vec<u8>> {
    match decode_bytes::<P::Call>(&msg) {
        Ok(msg) => with(slot, |p| p.handle_call_from(msg, ReplyTo(reply_to)))
            .map(|reply| Message::encode(&reply).into_bytes()),
        Err(e) => Some(Message::error("bad_message", &e.to_string()).into_bytes()),
    }
}

/// `handle-cast` export. A message that does not decode is logged and
/// dropped.
pub fn handle_cast<P: Plugin>(slot: &'static Slot<P>, msg: Vec<u8>) {
    match decode_bytes::<P::Cast>(&msg) {
        Ok(msg) => with(slot, |p| p.handle_cast(msg)),
        Err(e) => log(Level::Warn, &format!("cast dropped: bad_message: {e}")),
    }
}

/// `handle-info` export.
pub fn handle_info<P: Plugin>(slot: &'static Slot<P>, info: wit::Info) {
    let info = match info {
        wit::Info::Timer(msg) => Info::Timer(Message::from_bytes(msg)),
        wit::Info::Down(d) => Info::Down {
            monitor: MonitorRef(d.ref_),
            id: d.id,
            reason: from_wit_reason(d.reason),
        },
        wit::Info::Event(e) => Info::Event {
            topic: e.topic,
            msg: Message::from_bytes(e.msg),
        },
        wit::Info::Exit(e) => Info::Exit {
            id: e.id,
            reason: from_wit_reason(e.reason),
        },
        wit::Info::HttpResponse(r) => Info::Http {
            id: RequestId(r.id),
            result: r.result.map(|reply| Response {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            }),
        },
    };
    with(slot, |p| p.handle_info(info))
}

/// `terminate` export.
pub fn terminate<P: Plugin>(slot: &'static Slot<P>, reason: wit::ExitReason) {
    with(slot, |p| p.terminate(from_wit_reason(reason)))
}

/// `snapshot` export.
pub fn snapshot<P: Plugin>(slot: &'static Slot<P>) -> Option<Vec<u8>> {
    with(slot, |p| p.snapshot()).map(Message::into_bytes)
}

/// `restore` export: a reload that continues the child runs no `init`, so
/// the plugin value is made here.
pub fn restore<P: Plugin>(slot: &'static Slot<P>, state: Vec<u8>) -> Result<(), String> {
    if slot.with_borrow(Option::is_none) {
        install_panic_hook();
        slot.set(Some(P::default()));
    }
    with(slot, |p| p.restore(Message::from_bytes(state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter whose calls add to it.
    #[derive(Default)]
    struct Counter(i64);

    impl Plugin for Counter {
        type Args = i64;
        type Call = i64;
        type Reply = i64;
        type Cast = i64;

        fn handle_call(&mut self, n: i64) -> i64 {
            self.0 += n;
            self.0
        }

        fn handle_cast(&mut self, n: i64) {
            self.0 += n;
        }

        fn snapshot(&self) -> Option<Message> {
            Some(Message::encode(&self.0))
        }

        fn restore(&mut self, state: Message) -> Result<(), String> {
            self.0 = state.decode().map_err(|e| e.to_string())?;
            Ok(())
        }
    }

    std::thread_local! {
        // As `export!` declares it; each test fills it first.
        static SLOT: RefCell<Option<Counter>> = const { RefCell::new(None) };
    }

    #[test]
    fn callbacks_reach_the_plugin_in_the_slot() {
        // `init` also installs the panic hook, which logs through the host:
        // fill the slot as `init` does instead.
        SLOT.set(Some(Counter(1)));
        assert_eq!(handle_call(&SLOT, b"2".to_vec(), 1), Some(b"3".to_vec()));
        handle_cast(&SLOT, b"4".to_vec());
        assert_eq!(snapshot(&SLOT), Some(b"7".to_vec()));
        assert_eq!(restore(&SLOT, b"10".to_vec()), Ok(()));
        assert_eq!(handle_call(&SLOT, b"0".to_vec(), 2), Some(b"10".to_vec()));
    }

    #[test]
    fn a_call_that_does_not_decode_does_not_reach_the_plugin() {
        SLOT.set(Some(Counter(1)));
        let reply = handle_call(&SLOT, b"\"one\"".to_vec(), 1).unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["error"], "bad_message");
        assert_eq!(handle_call(&SLOT, b"0".to_vec(), 2), Some(b"1".to_vec()));
    }

    #[test]
    #[should_panic(expected = "before init")]
    fn a_callback_before_init_traps() {
        SLOT.set(None);
        handle_call(&SLOT, b"1".to_vec(), 1);
    }
}
