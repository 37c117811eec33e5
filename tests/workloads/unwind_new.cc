// C++ built g++ -O2 (no frame pointers): `new` called from named functions.
//   main -> build_all -> make_widgets: 5 x new char[3333] (operator new[]), held
//   main -> build_all -> make_node: 4 x new Node (40 bytes, operator new), held
#include <cstddef>

struct Node {
    long v[5];
};

static void *volatile held[16];

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((noinline)) char *make_widgets(std::size_t n) {
    char *p = new char[n];
    KEEP(p);
    return p;
}

__attribute__((noinline)) Node *make_node() {
    Node *p = new Node();
    KEEP(p);
    return p;
}

__attribute__((noinline)) void build_all() {
    for (int i = 0; i < 5; i++) held[i] = make_widgets(3333);
    for (int i = 0; i < 4; i++) held[5 + i] = make_node();
    KEEP(held[0]);
}

int main() {
    build_all();
    return 0;
}
