//! The wit-bindgen output for the `wasmvisor:plugin` world. Plugin authors do
//! not use it; it is public only so that `export!` can reach it.
#![allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]

wit_bindgen::generate!({
    world: "plugin",
    path: "../wit",
    pub_export_macro: true,
    export_macro_name: "__export_plugin_world",
    default_bindings_module: "wasmvisor_sdk::bindings",
    runtime_path: "wasmvisor_sdk::__private::wit_bindgen",
});
