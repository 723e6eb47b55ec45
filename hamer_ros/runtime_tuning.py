"""Process settings for the long-running entry points (the node, the CLI), measured to matter on CPU.

`tune_process()` must run before PyTorch is imported (the OpenMP runtime reads its settings when it loads):
scripts/hamer_node calls it before importing the node, the CLI's main before running a command.

1. OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``, unless already set). By default PyTorch's
   OpenMP workers spin between parallel regions; next to MediaPipe's own thread pool and other processes on a
   small CPU they burn the cores the other threads need (figures: docs/performance.md).
2. glibc malloc keeps freed blocks for reuse (fixed mmap threshold 32 MiB, trim threshold 64 MiB). With the
   default, dynamic thresholds, which glibc settles by allocation history, every frame's NumPy/PyTorch
   temporaries were mapped fresh and zero-filled after the memory-mapped checkpoint load: 99,700 page faults and
   13 % more time per full-network frame, 1.6-1.7x slower NumPy work in the renderer. At most 64 MiB of freed
   memory stays reserved. Same as ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864``; a no-op
   where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024     # glibc's own upper limit for the dynamic threshold
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def tune_process() -> None:
    """Both settings of the module docstring; call first thing in an entry point."""
    if 'torch' in sys.modules:
        log.debug('PyTorch is already loaded: OMP_WAIT_POLICY comes too late for this process')
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Fixed mmap/trim thresholds (point 2 of the module docstring); True when glibc accepted them."""
    name = ctypes.util.find_library('c')
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.debug('no glibc mallopt here (%s): malloc left at its defaults', name)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_freed_memory() -> bool:
    """Hands the memory freed so far back to the operating system (glibc `malloc_trim(0)`, every arena); True
    when it ran. For after a large one-off release, e.g. a MediaPipe graph closed because the detector's
    thresholds changed: its many small blocks, spread over the arenas of MediaPipe's threads, otherwise stay with
    the process (docs/performance.md, benchmarks/bench_restarts.py)."""
    name = ctypes.util.find_library('c')
    try:
        malloc_trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    malloc_trim(0)
    return True
