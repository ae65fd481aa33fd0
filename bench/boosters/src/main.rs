//! boost-bench: compare perpetual 2.3.0 and forust-ml 0.8.0 on one seeded synthetic
//! binary-classification data set. One case per process (so /usr/bin/time -v gives peak RSS).
//!
//! Usage:
//!   boost-bench --lib forust|perpetual --n ROWS [--budget B] [--cat] [--threads T] [--xthreads]
//!
//! Prints `key=value` lines; the last line is a single `RESULT {json}` line.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const N_FEAT: usize = 20;
const N_NUM: usize = 14;
const CAT_LEVELS: [usize; 6] = [5, 12, 50, 8, 30, 20];
const MISSING_COLS: [usize; 4] = [2, 4, 7, 9]; // 5% NaN each
const SEED: u64 = 0x5EED_2024;

// ---------------------------------------------------------------- data ----

struct SplitMix64(u64);
impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// uniform in [0, 1)
    fn unif(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unif()
    }
    /// standard normal (Box-Muller, one value per call)
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unif(); // (0,1]
        let u2 = self.unif();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Column-major data (col j occupies data[j*n .. (j+1)*n]) plus 0/1 labels.
struct Data {
    n: usize,
    x: Vec<f64>,
    y: Vec<f64>,
}

fn generate(n: usize) -> Data {
    let mut rng = SplitMix64(SEED);
    // per-level categorical effects (fixed by the seed, independent of n)
    let eff0: Vec<f64> = (0..CAT_LEVELS[0]).map(|_| rng.normal()).collect();
    let eff2: Vec<f64> = (0..CAT_LEVELS[2]).map(|_| 0.7 * rng.normal()).collect();
    let eff4: Vec<f64> = (0..CAT_LEVELS[4]).map(|_| 0.5 * rng.normal()).collect();

    let mut x = vec![0.0f64; n * N_FEAT];
    let mut logit = vec![0.0f64; n];
    let mut row = [0.0f64; N_FEAT];
    for i in 0..n {
        row[0] = rng.range(-2.0, 2.0);
        row[1] = rng.range(-2.0, 2.0);
        row[2] = rng.normal();
        row[3] = rng.normal();
        row[4] = rng.normal();
        row[5] = rng.range(-1.5, 1.5);
        row[6] = rng.range(-1.5, 1.5);
        row[7] = rng.normal();
        row[8] = 0.6 * row[0] + 0.8 * rng.normal(); // correlated with x0
        row[9] = rng.normal().exp(); // skewed
        row[10] = rng.unif();
        row[11] = rng.normal();
        row[12] = (rng.unif() * 10.0).floor(); // low-cardinality numeric
        row[13] = rng.normal() * 3.0;
        for (k, &lv) in CAT_LEVELS.iter().enumerate() {
            // skewed level frequencies: code = floor(L * u^1.5)
            let u = rng.unif().powf(1.5);
            row[N_NUM + k] = ((lv as f64 * u).floor()).min(lv as f64 - 1.0);
        }
        let c0 = row[14] as usize;
        let c2 = row[16] as usize;
        let c4 = row[18] as usize;
        let l = 1.5 * (row[0] * row[1]).sin()
            + if row[2] > 0.3 && row[3] < 0.0 { 1.2 } else { 0.0 }
            + eff0[c0]
            + 0.8 * row[4] * row[4]
            - 0.5 * row[5] * row[6]
            + eff2[c2]
            + eff4[c4] * (row[7] > 0.0) as i32 as f64 // cat x numeric interaction
            + 0.3 * row[9].ln()
            + 0.5 * rng.normal(); // noise
        logit[i] = l;
        // missing values are masked after computing the target (MAR)
        for &c in MISSING_COLS.iter() {
            if rng.unif() < 0.05 {
                row[c] = f64::NAN;
            }
        }
        for j in 0..N_FEAT {
            x[j * n + i] = row[j];
        }
    }
    let mut sorted = logit.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let thr = sorted[n / 2];
    let y = logit
        .iter()
        .map(|&l| {
            let lab = if l > thr { 1.0 } else { 0.0 };
            if rng.unif() < 0.10 {
                1.0 - lab // 10% label noise
            } else {
                lab
            }
        })
        .collect();
    Data { n, x, y }
}

/// Rows [a, b) as a new column-major buffer.
fn slice_rows(d: &Data, a: usize, b: usize) -> (Vec<f64>, Vec<f64>) {
    let m = b - a;
    let mut x = Vec::with_capacity(m * N_FEAT);
    for j in 0..N_FEAT {
        x.extend_from_slice(&d.x[j * d.n + a..j * d.n + b]);
    }
    (x, d.y[a..b].to_vec())
}

// ------------------------------------------------------------- metrics ----

fn auc(y: &[f64], score: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut ranks = vec![0.0f64; y.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0; // average rank of ties, 1-based
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    let npos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let nneg = y.len() as f64 - npos;
    let sum_pos: f64 = y.iter().zip(&ranks).filter(|(v, _)| **v > 0.5).map(|(_, r)| r).sum();
    (sum_pos - npos * (npos + 1.0) / 2.0) / (npos * nneg)
}

fn logloss(y: &[f64], p: &[f64]) -> f64 {
    let eps = 1e-15;
    y.iter()
        .zip(p)
        .map(|(&t, &q)| {
            let q = q.clamp(eps, 1.0 - eps);
            -(t * q.ln() + (1.0 - t) * (1.0 - q).ln())
        })
        .sum::<f64>()
        / y.len() as f64
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

fn bit_identical(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

// ------------------------------------------------------- process probes ----

fn proc_status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            let v: String = rest.chars().filter(|c| c.is_ascii_digit()).collect();
            return v.parse().unwrap_or(0);
        }
    }
    0
}

/// Samples the OS thread count of this process every 2 ms while `f` runs.
fn with_thread_probe<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let maxt = Arc::new(AtomicUsize::new(0));
    let (s2, m2) = (stop.clone(), maxt.clone());
    let h = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let t = proc_status("Threads:") as usize;
            m2.fetch_max(t, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let r = f();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    // minus the probe thread itself
    (r, maxt.load(Ordering::Relaxed).saturating_sub(1))
}

// ----------------------------------------------------------- the models ----

struct Args {
    lib: String,
    n: usize,
    budget: f32,
    cat: bool,
    threads: Option<usize>,
    xthreads: bool,
    no_refit: bool,
    cat_base0: bool,
    iters: usize,
    lr: f32,
}

fn parse_args() -> Args {
    let a: Vec<String> = std::env::args().collect();
    let mut args = Args { lib: String::new(), n: 100_000, budget: 0.5, cat: false, threads: None, xthreads: false, no_refit: false, cat_base0: false, iters: 100, lr: 0.1 };
    let mut i = 1;
    while i < a.len() {
        match a[i].as_str() {
            "--lib" => { args.lib = a[i + 1].clone(); i += 1; }
            "--n" => { args.n = a[i + 1].parse().unwrap(); i += 1; }
            "--budget" => { args.budget = a[i + 1].parse().unwrap(); i += 1; }
            "--threads" => { args.threads = Some(a[i + 1].parse().unwrap()); i += 1; }
            "--cat" => args.cat = true,
            "--xthreads" => args.xthreads = true,
            "--iters" => { args.iters = a[i + 1].parse().unwrap(); i += 1; } // forust iterations
            "--lr" => { args.lr = a[i + 1].parse().unwrap(); i += 1; } // forust learning_rate
            "--cat-base0" => args.cat_base0 = true, // keep 0-based category codes for perpetual
            "--no-refit" => args.no_refit = true, // skip the determinism re-fit (for the slow 1M cases)
            o => panic!("unknown arg {o}"),
        }
        i += 1;
    }
    args
}

/// What every case reports; filled by the per-crate function.
#[derive(Default)]
struct Out {
    fit_s: f64,
    fit_threads_seen: usize,
    hwm_after_fit_kb: u64,
    n_trees: usize,
    pred_test_logit: Vec<f64>,
    batch_pred_s: f64,
    refit_identical: bool,
    refit_max_abs_diff: f64,
    json_identical: bool,
    json_bytes: usize,
    dump_s: f64,
    load_s: f64,
    roundtrip_identical: bool,
    row_us_matrix: f64,
    row_us_trees: f64,
    row_matches_batch: bool,
    xthreads: Option<(bool, f64)>,
}

fn row_major(test_x: &[f64], m: usize, k: usize) -> Vec<[f64; N_FEAT]> {
    (0..k)
        .map(|i| {
            let mut r = [0.0; N_FEAT];
            for j in 0..N_FEAT {
                r[j] = test_x[j * m + i];
            }
            r
        })
        .collect()
}

fn run_forust(args: &Args, trx: &[f64], ntr: usize, ytr: &[f64], tex: &[f64], nte: usize) -> Out {
    use forust_ml::objective::ObjectiveType;
    use forust_ml::{GradientBooster, Matrix};
    let mut o = Out::default();
    let make = |threads: Option<usize>| {
        GradientBooster::default()
            .set_objective_type(ObjectiveType::LogLoss)
            .set_iterations(args.iters)
            .set_learning_rate(args.lr)
            .set_max_depth(6)
            .set_num_threads(threads)
    };
    let train = Matrix::new(trx, ntr, N_FEAT);
    let test = Matrix::new(tex, nte, N_FEAT);

    let mut m1 = make(args.threads);
    let t = Instant::now();
    let ((), th) = with_thread_probe(|| m1.fit_unweighted(&train, ytr, None).expect("forust fit"));
    o.fit_s = t.elapsed().as_secs_f64();
    o.fit_threads_seen = th;
    o.hwm_after_fit_kb = proc_status("VmHWM:");
    o.n_trees = m1.trees.len();
    let t = Instant::now();
    o.pred_test_logit = m1.predict(&test, true);
    o.batch_pred_s = t.elapsed().as_secs_f64();
    let nodes: Vec<usize> = m1.trees.iter().map(|t| t.nodes.len()).collect();
    println!(
        "forust: base_score={} total_nodes={} nodes/tree(first 10)={:?} logit[0..5]={:?}",
        m1.base_score, nodes.iter().sum::<usize>(), &nodes[..nodes.len().min(10)], &o.pred_test_logit[..5]
    );

    // determinism: second fit, same settings
    if !args.no_refit {
        let mut m2 = make(args.threads);
        m2.fit_unweighted(&train, ytr, None).expect("forust fit 2");
        let p2 = m2.predict(&test, true);
        o.refit_identical = bit_identical(&o.pred_test_logit, &p2);
        o.refit_max_abs_diff = max_abs_diff(&o.pred_test_logit, &p2);
        let j1 = m1.json_dump().unwrap();
        o.json_identical = j1 == m2.json_dump().unwrap();
    }

    if args.xthreads {
        let mut m3 = make(Some(1));
        m3.fit_unweighted(&train, ytr, None).expect("forust fit 1 thread");
        let p3 = m3.predict(&test, false);
        o.xthreads = Some((bit_identical(&o.pred_test_logit, &p3), max_abs_diff(&o.pred_test_logit, &p3)));
    }

    // serialization
    let t = Instant::now();
    let js = m1.json_dump().unwrap();
    o.dump_s = t.elapsed().as_secs_f64();
    o.json_bytes = js.len();
    let t = Instant::now();
    let loaded = GradientBooster::from_json(&js).expect("forust from_json");
    o.load_s = t.elapsed().as_secs_f64();
    o.roundtrip_identical = bit_identical(&o.pred_test_logit, &loaded.predict(&test, true));
    let path = format!("/tmp/boost-bench/models/forust_{}.json", args.n);
    std::fs::create_dir_all("/tmp/boost-bench/models").unwrap();
    m1.save_booster(&path).unwrap();
    let l2 = GradientBooster::load_booster(&path).unwrap();
    assert!(bit_identical(&o.pred_test_logit, &l2.predict(&test, true)));

    // single-row latency over 10,000 holdout rows
    let k = 10_000.min(nte);
    let rows = row_major(tex, nte, k);
    let mut acc = 0.0;
    let mut single = Vec::with_capacity(k);
    let mut manual = Vec::with_capacity(k);
    let t = Instant::now();
    for r in &rows {
        let v = m1.predict(&Matrix::new(r, 1, N_FEAT), false)[0];
        acc += v;
        single.push(v);
    }
    o.row_us_matrix = t.elapsed().as_secs_f64() * 1e6 / k as f64;
    let t = Instant::now();
    for r in &rows {
        // same sum order as GradientBooster::predict: base_score, then tree by tree
        let mut v = m1.base_score;
        for tree in &m1.trees {
            v += tree.predict_row_from_row_slice(r, &m1.missing);
        }
        manual.push(v);
    }
    o.row_us_trees = t.elapsed().as_secs_f64() * 1e6 / k as f64;
    std::hint::black_box(acc);
    o.row_matches_batch = bit_identical(&single, &o.pred_test_logit[..k]) && bit_identical(&manual, &o.pred_test_logit[..k]);
    o
}

fn run_perpetual(args: &Args, trx: &[f64], ntr: usize, ytr: &[f64], tex: &[f64], nte: usize) -> Out {
    use perpetual::booster::config::BoosterIO;
    use perpetual::objective::Objective;
    use perpetual::{Matrix, PerpetualBooster};
    let mut o = Out::default();
    let cats: Option<HashSet<usize>> = if args.cat { Some((N_NUM..N_FEAT).collect()) } else { None };
    let make = |threads: Option<usize>| {
        PerpetualBooster::default()
            .set_objective(Objective::LogLoss)
            .set_budget(args.budget)
            .set_num_threads(threads)
            .set_categorical_features(cats.clone())
    };
    let train = Matrix::new(trx, ntr, N_FEAT);
    let test = Matrix::new(tex, nte, N_FEAT);

    let mut m1 = make(args.threads);
    let t = Instant::now();
    let ((), th) = with_thread_probe(|| m1.fit(&train, ytr, None, None).expect("perpetual fit"));
    o.fit_s = t.elapsed().as_secs_f64();
    o.fit_threads_seen = th;
    o.hwm_after_fit_kb = proc_status("VmHWM:");
    o.n_trees = m1.trees.len();
    let t = Instant::now();
    o.pred_test_logit = m1.predict(&test, true);
    o.batch_pred_s = t.elapsed().as_secs_f64();
    let nodes: Vec<usize> = m1.trees.iter().map(|t| t.nodes.len()).collect();
    let depths: Vec<usize> = m1.trees.iter().map(|t| t.depth).collect();
    println!(
        "perpetual: base_score={} eta={} total_nodes={} nodes/tree(first 10)={:?} depth(first 10)={:?} logit[0..5]={:?} proba[0..5]={:?}",
        m1.base_score, m1.eta, nodes.iter().sum::<usize>(), &nodes[..nodes.len().min(10)],
        &depths[..depths.len().min(10)], &o.pred_test_logit[..5], &m1.predict_proba(&test, true, false)[..5]
    );

    if !args.no_refit {
        let mut m2 = make(args.threads);
        m2.fit(&train, ytr, None, None).expect("perpetual fit 2");
        let p2 = m2.predict(&test, true);
        o.refit_identical = bit_identical(&o.pred_test_logit, &p2);
        o.refit_max_abs_diff = max_abs_diff(&o.pred_test_logit, &p2);
        o.json_identical = m1.json_dump().unwrap() == m2.json_dump().unwrap();
    }

    if args.xthreads {
        let mut m3 = make(Some(1));
        m3.fit(&train, ytr, None, None).expect("perpetual fit 1 thread");
        let p3 = m3.predict(&test, false);
        o.xthreads = Some((bit_identical(&o.pred_test_logit, &p3), max_abs_diff(&o.pred_test_logit, &p3)));
    }

    let t = Instant::now();
    let js = m1.json_dump().unwrap();
    o.dump_s = t.elapsed().as_secs_f64();
    o.json_bytes = js.len();
    let t = Instant::now();
    let loaded = PerpetualBooster::from_json(&js).expect("perpetual from_json");
    o.load_s = t.elapsed().as_secs_f64();
    o.roundtrip_identical = bit_identical(&o.pred_test_logit, &loaded.predict(&test, true));
    let path = format!(
        "/tmp/boost-bench/models/perpetual_{}_b{}{}.json",
        args.n,
        args.budget,
        if args.cat { "_cat" } else { "" }
    );
    std::fs::create_dir_all("/tmp/boost-bench/models").unwrap();
    m1.save_booster(&path).unwrap();
    let l2 = PerpetualBooster::load_booster(&path).unwrap();
    assert!(bit_identical(&o.pred_test_logit, &l2.predict(&test, true)));

    let k = 10_000.min(nte);
    let rows = row_major(tex, nte, k);
    let mut acc = 0.0;
    let mut single = Vec::with_capacity(k);
    let mut manual = Vec::with_capacity(k);
    let t = Instant::now();
    for r in &rows {
        let v = m1.predict(&Matrix::new(r, 1, N_FEAT), false)[0];
        acc += v;
        single.push(v);
    }
    o.row_us_matrix = t.elapsed().as_secs_f64() * 1e6 / k as f64;
    let t = Instant::now();
    for r in &rows {
        let mut v = m1.base_score;
        for tree in m1.get_prediction_trees() {
            v += tree.predict_row_from_row_slice(r, &m1.cfg.missing);
        }
        manual.push(v);
    }
    o.row_us_trees = t.elapsed().as_secs_f64() * 1e6 / k as f64;
    std::hint::black_box(acc);
    o.row_matches_batch = bit_identical(&single, &o.pred_test_logit[..k]) && bit_identical(&manual, &o.pred_test_logit[..k]);
    o
}

fn main() {
    let args = parse_args();
    let t = Instant::now();
    let d = generate(args.n);
    let ntr = args.n * 8 / 10;
    let (mut trx, ytr) = slice_rows(&d, 0, ntr);
    let (mut tex, yte) = slice_rows(&d, ntr, args.n);
    let nte = args.n - ntr;
    // perpetual's Python wrapper encodes categories as 1-based codes (0 is never used; NaN = missing).
    // Mirror that unless --cat-base0. (Only changes the data fed to perpetual in --cat mode.)
    if args.lib == "perpetual" && args.cat && !args.cat_base0 {
        for j in N_NUM..N_FEAT {
            trx[j * ntr..(j + 1) * ntr].iter_mut().for_each(|v| *v += 1.0);
            tex[j * nte..(j + 1) * nte].iter_mut().for_each(|v| *v += 1.0);
        }
    }
    drop(d);
    let gen_s = t.elapsed().as_secs_f64();
    let pos_rate = ytr.iter().sum::<f64>() / ntr as f64;
    let hwm_data_kb = proc_status("VmHWM:");
    let rss_data_kb = proc_status("VmRSS:");

    let o = match args.lib.as_str() {
        "forust" => run_forust(&args, &trx, ntr, &ytr, &tex, nte),
        "perpetual" => run_perpetual(&args, &trx, ntr, &ytr, &tex, nte),
        l => panic!("--lib must be forust or perpetual, got {l}"),
    };
    let p: Vec<f64> = o.pred_test_logit.iter().map(|&v| sigmoid(v)).collect();
    let a = auc(&yte, &o.pred_test_logit);
    let ll = logloss(&yte, &p);
    let case = match args.lib.as_str() {
        "forust" => format!("forust it={} lr={} depth=6", args.iters, args.lr),
        _ => format!(
            "perpetual budget={}{}",
            args.budget,
            if !args.cat { "" } else if args.cat_base0 { " cat(codes 0-based)" } else { " cat(codes 1-based)" }
        ),
    };
    let xt = match o.xthreads {
        Some((same, diff)) => format!("{{\"identical\":{same},\"max_abs_diff\":{diff:e}}}"),
        None => "null".to_string(),
    };
    println!(
        "RESULT {{\"case\":\"{case}\",\"n\":{},\"gen_s\":{gen_s:.2},\"train_pos_rate\":{pos_rate:.4},\
\"rss_after_data_mb\":{:.1},\"hwm_after_data_mb\":{:.1},\"fit_s\":{:.3},\"fit_threads_seen\":{},\
\"rayon_global_threads\":{},\"n_trees\":{},\"auc\":{a:.5},\"logloss\":{ll:.5},\"batch_pred_s\":{:.4},\
\"refit_identical\":{},\"refit_done\":{},\"refit_max_abs_diff\":{:e},\"json_identical\":{},\"json_bytes\":{},\"dump_s\":{:.3},\
\"load_s\":{:.3},\"roundtrip_identical\":{},\"row_us_matrix\":{:.2},\"row_us_trees\":{:.2},\
\"row_matches_batch\":{},\"xthreads_1_vs_default\":{xt},\"hwm_after_first_fit_mb\":{:.1},\"peak_hwm_mb\":{:.1}}}",
        args.n,
        rss_data_kb as f64 / 1024.0,
        hwm_data_kb as f64 / 1024.0,
        o.fit_s,
        o.fit_threads_seen,
        rayon::current_num_threads(),
        o.n_trees,
        o.batch_pred_s,
        o.refit_identical,
        !args.no_refit,
        o.refit_max_abs_diff,
        o.json_identical,
        o.json_bytes,
        o.dump_s,
        o.load_s,
        o.roundtrip_identical,
        o.row_us_matrix,
        o.row_us_trees,
        o.row_matches_batch,
        o.hwm_after_fit_kb as f64 / 1024.0,
        proc_status("VmHWM:") as f64 / 1024.0,
    );
}
