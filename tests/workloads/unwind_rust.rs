// A Rust program built like a release (opt-level 3, no frame pointers; tests/tests/it/stacks.rs)
// that holds known bytes from known functions until it exits:
//   fill_rows: Vec::<u64>::with_capacity(1000) = 8000 B, called by build_table, called by main;
//   boxed_page: Box<[u8; 4096]> = 4096 B, 3 times, called by build_table;
//   grow_list: 100 pushes onto an empty Vec<u32>, grown by the standard library's out-of-line
//     RawVec code to 128 elements = 512 B held, called by build_table;
//   build_table: Vec::with_capacity(3) of boxes = 24 B.
use std::hint::black_box;

#[inline(never)]
fn fill_rows(n: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(black_box(n));
    for i in 0..n {
        v.push(i as u64);
    }
    v
}

#[inline(never)]
fn boxed_page(fill: u8) -> Box<[u8; 4096]> {
    Box::new([black_box(fill); 4096])
}

#[inline(never)]
fn grow_list(n: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for i in 0..black_box(n) {
        v.push(i);
    }
    v
}

#[inline(never)]
fn build_table() -> (Vec<u64>, Vec<Box<[u8; 4096]>>, Vec<u32>) {
    let rows = fill_rows(1000);
    let list = grow_list(100);
    let mut pages = Vec::with_capacity(3);
    for i in 0..3 {
        pages.push(boxed_page(i));
    }
    (rows, pages, list)
}

fn main() {
    let table = black_box(build_table());
    // Held at exit: never freed.
    std::mem::forget(table);
}
