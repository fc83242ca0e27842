//! The `wasmvisor` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    wasmvisor::cli::main()
}
