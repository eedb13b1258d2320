//! `task-sharding`: see `task-sharding --help`.

fn main() -> std::process::ExitCode {
    wrapper::binary_main()
}
