//! The `mailfleet` binary: everything lives in the library; this only hands over.

/// mimalloc rather than glibc's allocator: see its line in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Output piped into `head` (or any reader that stops early) ends the process quietly, as
    // it does for other command-line tools, instead of a panic on the next write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread is started
    // touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    mailfleet::cli::main()
}
