//! Integration tests and ground-truth workloads for oomtrace (see tests/tests/).
