//! The `egress-agent` binary; everything is in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    agent::main()
}
