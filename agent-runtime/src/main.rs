//! `fastagentic`: the FastAgentic agent server (see the `agent_runtime` library).

// mimalloc instead of the C library's allocator: a request allocates and frees many small
// buffers (headers, JSON, the run record), and glibc's malloc was the largest single cost in a
// profile of the request path; musl's, in the static image, is slower still (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agent_runtime::main_entry()
}
