//! `keel bench proxy-rules` without the rest of keel, so that it builds quickly in release mode:
//! `cargo run --release -p keel-bench --example proxy_rules -- [SERVICES ENDPOINTS CHANGES]` (as root).

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let get = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    match keel_bench::proxy_rules::run(get(0, 1000), get(1, 10), get(2, 100)) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("proxy_rules: {e}");
            std::process::exit(1);
        }
    }
}
