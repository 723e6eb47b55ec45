"""What the running CPU offers for HaMeR's lower precisions (torch-free, Linux ``/proc/cpuinfo``).

bf16 matmuls are fast only where the CPU executes them natively: AMX tiles (``amx_bf16``, Intel Xeon since
Sapphire Rapids) or the AVX-512 BF16 dot-product instructions (``avx512_bf16``: e.g. AMD Zen 4/5, Intel Cooper
Lake). Elsewhere oneDNN emulates them with fp32 arithmetic plus conversions: the rounding error without the
speed, so `precision='bf16'` on such a CPU falls back to fp32 (``hamer_ros.hamer.model``).
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Dict, Optional, Tuple

CPUINFO = Path('/proc/cpuinfo')

# Flags worth printing next to CPU figures: vector width, native bf16, int8 dot products, AMX.
RELEVANT_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'avx512_fp16',
                  'amx_tile', 'amx_bf16', 'amx_int8')


def _first_processor(text: str) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(':')
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_description(cpuinfo: Optional[str] = None) -> Tuple[str, frozenset]:
    """(model name, set of feature flags) of the first processor; flags empty where /proc/cpuinfo is absent."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return platform.processor() or platform.machine(), frozenset()
    fields = _first_processor(cpuinfo)
    return fields.get('model name', platform.machine()), frozenset(fields.get('flags', '').split())


def native_bf16(flags: Optional[frozenset] = None) -> Optional[str]:
    """'AMX-BF16' or 'AVX512-BF16' when the CPU computes bf16 dot products natively, else None."""
    flags = cpu_description()[1] if flags is None else flags
    if 'amx_bf16' in flags:
        return 'AMX-BF16'
    if 'avx512_bf16' in flags:
        return 'AVX512-BF16'
    return None


def relevant_flags(flags: Optional[frozenset] = None) -> str:
    """The `RELEVANT_FLAGS` this CPU has, in that order ('none of ...' when it has none of them)."""
    flags = cpu_description()[1] if flags is None else flags
    present = [flag for flag in RELEVANT_FLAGS if flag in flags]
    return ' '.join(present) if present else f'none of {" ".join(RELEVANT_FLAGS)}'
