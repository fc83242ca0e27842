//! Host bindings for the `wasmvisor:plugin` world.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: {
        "wasmvisor:plugin/runtime.call": async | trappable,
        // Async for a cast to, or a link with, a child on another node of a
        // cluster.
        "wasmvisor:plugin/runtime.cast": async | trappable,
        "wasmvisor:plugin/runtime.link": async | trappable,
        "wasmvisor:plugin/runtime.start-child": async | trappable,
        "wasmvisor:plugin/runtime.stop-child": async | trappable,
        "wasmvisor:plugin/runtime.checkpoint": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});
