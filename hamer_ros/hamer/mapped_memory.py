"""Give back the memory-mapped checkpoint pages of tensors that were converted to another form (bf16, int8).

The checkpoint is mapped privately and read-only in practice (``torch.load(mmap=True)``): its pages are loaded
from the file when first touched and then count in this process's resident memory for as long as any tensor
of the file is alive — and the fp32 LayerNorms, biases and MANO arrays stay alive. Converting the 2.5 GB of
ViT weights to bf16 or int8 reads every page once, so without help the process would hold the fp32 pages and
their converted copy. ``madvise(MADV_DONTNEED)`` on such a file-backed private range drops the pages from the
process; should anything read the range again, the kernel reloads it from the file (the contents are the
file's, since nothing ever wrote to these pages). Anonymous memory (a network built in memory, e.g. tests'
random weights) is never touched: there the same call would zero it.

Linux only; elsewhere nothing is released (the pages stay resident until the process ends).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
from bisect import bisect_right
from pathlib import Path
from typing import Iterable, List, Tuple

import torch

log = logging.getLogger(__name__)

MADV_DONTNEED = 4   # <sys/mman.h> on Linux
PROC_MAPS = Path('/proc/self/maps')


def _private_file_mappings() -> List[Tuple[int, int]]:
    """Sorted (start, end) of this process's private mappings of regular files."""
    ranges = []
    for line in PROC_MAPS.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith('/') or parts[1][3] != 'p' or parts[4] == '0':
            continue
        start, end = (int(value, 16) for value in parts[0].split('-'))
        ranges.append((start, end))
    return sorted(ranges)


def release_file_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Drop the whole pages of `tensors` that lie in private file mappings from this process's memory; returns
    the number of bytes given back (0 where not Linux or nothing is file-backed)."""
    tensors = list(tensors)
    try:
        mappings = _private_file_mappings()
        madvise = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True).madvise
    except (OSError, AttributeError, TypeError):
        log.debug('cannot release mapped pages here (no /proc/self/maps or madvise)')
        return 0
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    starts = [start for start, _ in mappings]
    page = mmap.PAGESIZE
    released = 0
    for tensor in tensors:
        if tensor.device.type != 'cpu' or tensor.is_mkldnn or not tensor.is_contiguous():
            continue
        begin = tensor.data_ptr()
        end = begin + tensor.numel() * tensor.element_size()
        index = bisect_right(starts, begin) - 1
        if index < 0 or end > mappings[index][1]:
            continue   # not (entirely) inside a file mapping: leave it alone
        first, last = -(-begin // page) * page, end // page * page   # whole pages only
        if last > first and madvise(first, last - first, MADV_DONTNEED) == 0:
            released += last - first
    return released
