//! The glue between the WIT exports and a [`Plugin`]: what `export!` expands
//! to calls into here.

use crate::bindings::wasmvisor::plugin::types as wit;
use crate::message::{Message, decode_bytes};
use crate::plugin::{Info, Plugin};
use crate::runtime::{Level, from_wit_reason, log};
use std::cell::RefCell;

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
            static __WASMVISOR_SLOT: $crate::__private::Slot<$plugin> =
                $crate::__private::Slot::new();

            struct __WasmvisorExport;

            impl $crate::bindings::Guest for __WasmvisorExport {
                fn init(args: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init(&__WASMVISOR_SLOT, args)
                }
                fn handle_call(msg: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8> {
                    $crate::__private::handle_call(&__WASMVISOR_SLOT, msg)
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

/// Holds the plugin value of this instance.
///
/// A wasm instance runs one callback at a time on one thread, so a
/// `RefCell` in a static is sound here; `Sync` is asserted only to allow the
/// static.
pub struct Slot<P>(RefCell<Option<P>>);

// SAFETY: wasm32-wasip2 instances are single-threaded; the host never enters an
// instance concurrently.
unsafe impl<P> Sync for Slot<P> {}

impl<P> Slot<P> {
    /// An empty slot, filled by `init`.
    pub const fn new() -> Self {
        Slot(RefCell::new(None))
    }

    fn with<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        let mut guard = self.0.borrow_mut();
        // The host calls `init` before anything else and never calls an
        // instance whose `init` failed, so an empty slot is a host bug: trap.
        let plugin = guard
            .as_mut()
            .expect("wasmvisor-sdk: a callback ran before init succeeded");
        f(plugin)
    }
}

impl<P> Default for Slot<P> {
    fn default() -> Self {
        Self::new()
    }
}

fn install_panic_hook() {
    // The default hook writes to stderr, which the host turns into log lines
    // anyway; this hook also hands the message to the host in one piece, so a
    // trap caused by a panic reports *why* instead of "unreachable executed".
    std::panic::set_hook(Box::new(|info| {
        log(Level::Error, &format!("panic: {info}"));
    }));
}

/// `init` export.
pub fn init<P: Plugin>(slot: &Slot<P>, args: Vec<u8>) -> Result<(), String> {
    install_panic_hook();
    let args: P::Args = decode_bytes(&args).map_err(|e| format!("invalid args: {e}"))?;
    let mut plugin = P::default();
    plugin.init(args)?;
    *slot.0.borrow_mut() = Some(plugin);
    Ok(())
}

/// `handle-call` export. A request that does not decode is answered with
/// `{"error": "bad_message", ...}` instead of reaching the plugin.
pub fn handle_call<P: Plugin>(slot: &Slot<P>, msg: Vec<u8>) -> Vec<u8> {
    match decode_bytes::<P::Call>(&msg) {
        Ok(msg) => slot.with(|p| Message::encode(&p.handle_call(msg)).into_bytes()),
        Err(e) => Message::error("bad_message", &e.to_string()).into_bytes(),
    }
}

/// `handle-cast` export. A message that does not decode is logged and
/// dropped.
pub fn handle_cast<P: Plugin>(slot: &Slot<P>, msg: Vec<u8>) {
    match decode_bytes::<P::Cast>(&msg) {
        Ok(msg) => slot.with(|p| p.handle_cast(msg)),
        Err(e) => log(Level::Warn, &format!("cast dropped: bad_message: {e}")),
    }
}

/// `handle-info` export.
pub fn handle_info<P: Plugin>(slot: &Slot<P>, info: wit::Info) {
    let info = match info {
        wit::Info::Timer(msg) => Info::Timer(Message::from_bytes(msg)),
        wit::Info::Down(d) => Info::Down {
            id: d.id,
            reason: from_wit_reason(d.reason),
        },
        wit::Info::Event(e) => Info::Event {
            topic: e.topic,
            msg: Message::from_bytes(e.msg),
        },
    };
    slot.with(|p| p.handle_info(info))
}

/// `terminate` export.
pub fn terminate<P: Plugin>(slot: &Slot<P>, reason: wit::ExitReason) {
    slot.with(|p| p.terminate(from_wit_reason(reason)))
}

/// `snapshot` export.
pub fn snapshot<P: Plugin>(slot: &Slot<P>) -> Option<Vec<u8>> {
    slot.with(|p| p.snapshot()).map(Message::into_bytes)
}

/// `restore` export.
pub fn restore<P: Plugin>(slot: &Slot<P>, state: Vec<u8>) -> Result<(), String> {
    slot.with(|p| p.restore(Message::from_bytes(state)))
}
