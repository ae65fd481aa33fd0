//! Times the batch view on a spec's master dataset: polars' group-by (what `batch` runs) beside the speed layer's
//! row-by-row fold of the same columns.
//!
//! `cargo run --release -p lambda-batch --example view_bench -- SPEC`

use std::path::Path;
use std::time::Instant;

use lambda_batch::read::read_master;
use lambda_batch::view::batch_view;
use lambda_core::spec::Spec;
use lambda_stores::views::ViewTable;

fn peak_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) / 1024
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: view_bench SPEC")?;
    let spec = Spec::from_file(Path::new(&path))?;
    let start = Instant::now();
    let data = read_master(&spec)?;
    let c = &data.columns;
    let read = start.elapsed().as_secs_f64();
    let after_read = peak_mb();
    println!("| step | rows | keys | seconds | rows/s | peak MB |");
    println!("|---|---|---|---|---|---|");
    println!("| read | {} | | {read:.2} | {:.0} | {after_read} |", c.len(), c.len() as f64 / read);
    let start = Instant::now();
    let view = batch_view(&spec, c)?;
    let t = start.elapsed().as_secs_f64();
    println!("| polars group-by | {} | {} | {t:.2} | {:.0} | {} |", c.len(), view.len(), c.len() as f64 / t, peak_mb());
    let start = Instant::now();
    let mut rows = ViewTable::new(&spec);
    for r in 0..c.len() {
        let key = c.keys.get(r).unwrap_or("");
        rows.observe_ref(key, c.times[r], c.seqs[r], &c.row(r), c.target(r));
    }
    let t = start.elapsed().as_secs_f64();
    println!("| row-by-row fold | {} | {} | {t:.2} | {:.0} | {} |", c.len(), rows.len(), c.len() as f64 / t, peak_mb());
    Ok(())
}
