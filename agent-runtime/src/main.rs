//! `fastagentic`: the FastAgentic agent server (see the `agent_runtime` library).

fn main() -> std::process::ExitCode {
    agent_runtime::main_entry()
}
