"""Peak resident memory of a call, for the benchmarks (Linux /proc)."""

from __future__ import annotations

import gc


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_extra_mib(fn) -> float:
    """Peak resident memory above the current level while fn runs (VmHWM reset first); NaN if unsupported."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    base = _status_kib("VmRSS")
    fn()
    return max(_status_kib("VmHWM") - base, 0) / 1024
