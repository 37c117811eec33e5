// C++ under failure injection: a failed throwing `new` throws std::bad_alloc (caught here), a
// failed `new (std::nothrow)` returns NULL. Output through write(2).
#include <unistd.h>

#include <cstring>
#include <new>

static void say(const char *s) { write(1, s, std::strlen(s)); }

__attribute__((noinline)) char *site_new() { return new char[100]; }

__attribute__((noinline)) char *site_nothrow() { return new (std::nothrow) char[200]; }

int main() {
    char *a = nullptr;
    try {
        a = site_new();
        say("new ok\n");
    } catch (const std::bad_alloc &) {
        say("caught std::bad_alloc\n");
    }
    char *b = site_nothrow();
    say(b ? "nothrow ok\n" : "nothrow NULL\n");
    delete[] a;
    delete[] b;
    return 0;
}
