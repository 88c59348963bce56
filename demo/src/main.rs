//! `airlock-demo`: see `airlock-demo --help`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = airlock_demo::cli::run(&args, &mut std::io::stdout().lock()) {
        eprintln!("airlock-demo: {e}");
        std::process::exit(e.exit_code());
    }
}
