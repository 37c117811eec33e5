// Rust under failure injection: an allocation that fails ends in `handle_alloc_error`, which
// aborts (SIGABRT). `site_vec` is the allocation site a sweep fails.
use std::hint::black_box;

#[inline(never)]
fn site_vec(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

fn main() {
    let v = black_box(site_vec(black_box(1000)));
    println!("allocated {}", v.len());
}
