/* Prints, as `name=value` lines (`name=none` where a field does not exist in that version), the
 * byte offsets of the CPython structures that oomtrace reads, from the interpreter's own headers.
 * This is how the tables in oomtrace/src/python/offsets.rs were derived (3.8 to 3.12), and the
 * tests in oomtrace/src/python/tests.rs rebuild it against every version's headers found on the
 * machine and check the baked tables (3.8 to 3.12) and the offsets read from a live 3.13's
 * `_Py_DebugOffsets` against its output.
 *
 * Build: gcc -I<prefix>/include/python3.X -I<prefix>/include/python3.X/internal offsets.c
 * (Py_BUILD_CORE is defined here: the internal headers need it.) */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if PY_VERSION_HEX < 0x03080000 || PY_VERSION_HEX >= 0x030E0000
#error "oomtrace knows the layouts of 3.8 to 3.13 only"
#endif

#if PY_VERSION_HEX < 0x03090000
#include "internal/pycore_pystate.h"
#else
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#endif
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#include "internal/pycore_code.h"
#else
#include <frameobject.h>
#endif

#define SHOW(name, value) printf("%s=%lu\n", name, (unsigned long)(value))
#define NONE(name) printf("%s=none\n", name)

/* The bits of the `state` word of a PyASCIIObject that hold `kind`, `compact` and `ascii`:
 * set each bit-field alone in a zeroed object and look at the word. */
static unsigned int state_mask(int which) {
    PyASCIIObject o;
    unsigned int word;
    memset(&o, 0, sizeof o);
    if (which == 0) o.state.kind = 7;
    if (which == 1) o.state.compact = 1;
    if (which == 2) o.state.ascii = 1;
    memcpy(&word, (char *)&o + offsetof(PyASCIIObject, hash) + sizeof(Py_hash_t), sizeof word);
    return word;
}

int main(void) {
    printf("version=%d.%d\n", PY_MAJOR_VERSION, PY_MINOR_VERSION);
#if PY_VERSION_HEX < 0x030C0000
    SHOW("runtime_tstate_current", offsetof(_PyRuntimeState, gilstate.tstate_current));
#else
    NONE("runtime_tstate_current");
#endif
    SHOW("runtime_interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
#if PY_VERSION_HEX < 0x030B0000
    SHOW("interp_threads_head", offsetof(PyInterpreterState, tstate_head));
#else
    SHOW("interp_threads_head", offsetof(PyInterpreterState, threads.head));
#endif
    SHOW("tstate_next", offsetof(PyThreadState, next));
    SHOW("tstate_thread_id", offsetof(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030B0000
    SHOW("tstate_native_thread_id", offsetof(PyThreadState, native_thread_id));
#else
    NONE("tstate_native_thread_id");
#endif

#if PY_VERSION_HEX >= 0x030D0000
    SHOW("tstate_frame", offsetof(PyThreadState, current_frame));
    NONE("cframe_current_frame");
    SHOW("frame_previous", offsetof(_PyInterpreterFrame, previous));
    SHOW("frame_code", offsetof(_PyInterpreterFrame, f_executable));
    SHOW("frame_instr", offsetof(_PyInterpreterFrame, instr_ptr));
    SHOW("frame_instr_is_pointer", 1);
    SHOW("frame_owner", offsetof(_PyInterpreterFrame, owner));
    SHOW("frame_owner_cstack", FRAME_OWNED_BY_CSTACK);
    NONE("frame_is_entry");
#elif PY_VERSION_HEX < 0x030B0000
    SHOW("tstate_frame", offsetof(PyThreadState, frame));
    NONE("cframe_current_frame");
    SHOW("frame_previous", offsetof(PyFrameObject, f_back));
    SHOW("frame_code", offsetof(PyFrameObject, f_code));
    SHOW("frame_instr", offsetof(PyFrameObject, f_lasti));
    SHOW("frame_instr_is_pointer", 0);
    NONE("frame_owner");
    SHOW("frame_owner_cstack", 0);
    NONE("frame_is_entry");
#else
    SHOW("tstate_frame", offsetof(PyThreadState, cframe));
    SHOW("cframe_current_frame", offsetof(_PyCFrame, current_frame));
    SHOW("frame_previous", offsetof(_PyInterpreterFrame, previous));
    SHOW("frame_code", offsetof(_PyInterpreterFrame, f_code));
    SHOW("frame_instr", offsetof(_PyInterpreterFrame, prev_instr));
    SHOW("frame_instr_is_pointer", 1);
#if PY_VERSION_HEX >= 0x030C0000
    SHOW("frame_owner", offsetof(_PyInterpreterFrame, owner));
    SHOW("frame_owner_cstack", FRAME_OWNED_BY_CSTACK);
    NONE("frame_is_entry");
#else
    NONE("frame_owner");
    SHOW("frame_owner_cstack", 0);
    SHOW("frame_is_entry", offsetof(_PyInterpreterFrame, is_entry));
#endif
#endif

    SHOW("code_filename", offsetof(PyCodeObject, co_filename));
    SHOW("code_name", offsetof(PyCodeObject, co_name));
#if PY_VERSION_HEX >= 0x030B0000
    SHOW("code_qualname", offsetof(PyCodeObject, co_qualname));
#else
    NONE("code_qualname");
#endif
    SHOW("code_firstlineno", offsetof(PyCodeObject, co_firstlineno));
#if PY_VERSION_HEX >= 0x030A0000
    SHOW("code_linetable", offsetof(PyCodeObject, co_linetable));
#else
    SHOW("code_linetable", offsetof(PyCodeObject, co_lnotab));
#endif
#if PY_VERSION_HEX >= 0x030B0000
    SHOW("code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
    NONE("code_code");
#else
    NONE("code_adaptive");
    SHOW("code_code", offsetof(PyCodeObject, co_code));
#endif

    SHOW("bytes_size", offsetof(PyVarObject, ob_size));
    SHOW("bytes_data", offsetof(PyBytesObject, ob_sval));
    SHOW("unicode_length", offsetof(PyASCIIObject, length));
    SHOW("unicode_state", offsetof(PyASCIIObject, hash) + sizeof(Py_hash_t));
    SHOW("unicode_ascii_size", sizeof(PyASCIIObject));
    SHOW("unicode_compact_size", sizeof(PyCompactUnicodeObject));
    SHOW("unicode_kind_mask", state_mask(0));
    SHOW("unicode_compact_mask", state_mask(1));
    SHOW("unicode_ascii_mask", state_mask(2));
    return 0;
}
