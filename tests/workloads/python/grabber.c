/* A C extension for the Python frames test: grab(n) mallocs n bytes and keeps them. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

static void *kept[4096];
static int nkept;

static __attribute__((noinline)) PyObject *grab(PyObject *self, PyObject *args)
{
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n))
        return NULL;
    void *p = malloc((size_t)n);
    if (!p)
        return PyErr_NoMemory();
    memset(p, 1, (size_t)n);
    if (nkept < 4096)
        kept[nkept++] = p;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"grab", grab, METH_VARARGS, "malloc n bytes and keep them"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "grabber", NULL, -1, methods};

PyMODINIT_FUNC PyInit_grabber(void) { return PyModule_Create(&module); }
