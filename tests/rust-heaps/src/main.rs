//! Ground truth for a prefixed jemalloc: `rust-heaps run` keeps 10 × 1000 bytes from
//! `leak_boxes` and allocates and frees 1000 × 64 bytes in `churn`, all through tikv-jemallocator
//! (`_rjem_*`), and 3 × 500 bytes through glibc's `malloc` in `leak_libc` (a second heap);
//! `rust-heaps attach` prints "ready", waits for a line on stdin, then does the same.

use std::hint::black_box;
use std::io::BufRead;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

extern "C" {
    fn malloc(size: usize) -> *mut u8;
}

#[inline(never)]
fn leak_boxes(keep: &mut Vec<Box<[u8]>>) {
    for _ in 0..10 {
        keep.push(black_box(vec![1u8; 1000]).into_boxed_slice());
    }
}

#[inline(never)]
fn churn() {
    for _ in 0..1000 {
        drop(black_box(Box::new([7u8; 64])));
    }
}

#[inline(never)]
fn leak_libc(keep: &mut Vec<usize>) {
    for _ in 0..3 {
        // SAFETY: plain libc malloc; the block is kept (leaked) on purpose.
        keep.push(unsafe { black_box(malloc(500)) } as usize);
    }
}

fn main() {
    let attach = std::env::args().nth(1).as_deref() == Some("attach");
    if attach {
        println!("ready {}", std::process::id());
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).unwrap();
    }
    let mut keep = Vec::with_capacity(64);
    let mut raw = Vec::with_capacity(64);
    leak_boxes(&mut keep);
    churn();
    leak_libc(&mut raw);
    black_box((&keep, &raw));
    // Leave without dropping `keep`: its blocks are the leak.
    std::process::exit(0);
}
