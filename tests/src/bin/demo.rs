//! The `airlock-demo` CLI under a name of the e2e package, so that `cargo test -p
//! airlock-e2e` always builds it before the tests that spawn it (Cargo only builds the
//! binaries of the package under test). Same code, same arguments.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = airlock_demo::cli::run(&args, &mut std::io::stdout().lock()) {
        eprintln!("airlock-demo: {e}");
        std::process::exit(e.exit_code());
    }
}
