"""Measuring what a model really takes on its device, and giving memory back after an unload.

The zoo accounts an estimate at admission and replaces it by a measurement after load plus one
warm-up inference (Ollama's under-estimates are how its users get OOMs). What "taken" means
depends on the device:

- CPU: the process' resident set (``/proc/self/statm``) before and after. glibc keeps freed
  heap pages unless asked, so :meth:`Probe.release` calls ``malloc_trim(0)``; without it a
  reload measures ~0 bytes and the next estimate would be wrong. glibc also raises its mmap
  threshold each time a large block is freed (up to 32 MB), after which a model's buffers come
  from the heap, where freed pages of other models are reused: one model then measured 69-85 MB
  from load to load (demographics) and another 13-18 MB. :func:`steady_allocator` pins the
  threshold at glibc's own starting value (128 KiB), so large blocks always map and unmap
  whole, and the same loads measured within 1 % of each other (benchmarks/zoo.py G2).
- CUDA: the larger of torch's allocator delta (what PyTorch models hold) and NVML's whole-device
  delta (what onnxruntime's and llama.cpp's own CUDA allocations hold, which torch cannot see);
  the peak is torch's ``max_memory_reserved`` over the load. ``torch.cuda.empty_cache()`` runs
  after every unload so cached blocks do not look like a model that is still there.

Probes are only called on the device's loader thread, never on the admission path (the
decision uses the cached :attr:`Probe.free_bytes` of the last load or unload).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
_LOGGER = logging.getLogger(__name__)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class MemoryProbe(Protocol):
    """What the manager needs from a device's memory figures (:class:`Probe` on real devices)."""

    free_bytes: int | None

    def measure(
        self, work: Callable[[], T], settle: Callable[[], bool] = ...
    ) -> tuple[T, Measured]: ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Measured:
    """Bytes a load added (``delta``) and the most it held on the way (``peak``)."""

    delta: int
    peak: int
    seconds: float
    trusted: bool = True
    """False when other work ran on the device during a reading: the figure includes it."""


def process_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def system_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h); setting it turns the dynamic threshold off."""
MMAP_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def steady_allocator() -> bool:
    """Pin glibc's mmap threshold (once per process) so that RSS deltas measure a model."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _malloc_trim() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class Probe:
    """Memory figures for one device (``cpu`` or ``cuda:N``)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else None
        self._nvml: Any = None
        self.free_bytes: int | None = None
        if self.index is not None and not _cuda_readable(self.index):
            # A device torch cannot query (no driver in this process, a test's pretend GPU):
            # measure the host process instead, so a load is still measured, never guessed.
            _LOGGER.warning("%s memory cannot be read; measuring process RSS instead", device)
            self.index = None
        if self.index is not None:
            self._nvml = _nvml_handle(self.index)
        else:
            steady_allocator()
        self.refresh()

    def _torch(self) -> Any:
        import torch

        return torch

    def used_bytes(self) -> int:
        """What this process holds on the device now.

        On the CPU, freed heap pages are handed back first: other threads' finished work
        buffers would otherwise stay resident and be counted as the model being measured.
        """
        if self.index is None:
            _malloc_trim()
            return process_rss_bytes()
        torch = self._torch()
        allocated = int(torch.cuda.memory_reserved(self.index))
        if self._nvml is not None:
            return max(allocated, _nvml_used(self._nvml))
        return allocated

    def refresh(self) -> None:
        """Re-read the device's free memory (cached for the admission path)."""
        if self.index is None:
            self.free_bytes = system_available_bytes()
            return
        try:
            free, _total = self._torch().cuda.mem_get_info(self.index)
            self.free_bytes = int(free)
        except Exception:
            self.free_bytes = None

    def measure(
        self, work: Callable[[], T], settle: Callable[[], bool] = lambda: True
    ) -> tuple[T, Measured]:
        """Run ``work`` (load + warm-up) and measure what it left on the device.

        ``settle`` is called before each reading: the zoo waits there (briefly, bounded) for
        a moment when none of its other models is running, so their work buffers are not
        counted as this model (a CPU's resident set is the whole process'). It says whether
        that moment came; if not, the figure is returned as untrusted.
        """
        import time

        gc.collect()
        quiet = settle()
        before = self.used_bytes()
        if self.index is not None:
            self._torch().cuda.reset_peak_memory_stats(self.index)
        started = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - started
        quiet = settle() and quiet
        after = self.used_bytes()
        delta = max(0, after - before)
        peak = delta
        if self.index is not None:
            peak = max(delta, int(self._torch().cuda.max_memory_reserved(self.index)) - before)
        self.refresh()
        return result, Measured(delta, peak, seconds, trusted=quiet)

    def release(self) -> None:
        """After an unload: collect, return heap pages to the OS, empty CUDA's cache."""
        gc.collect()
        if self.index is None:
            _malloc_trim()
        else:
            self._torch().cuda.empty_cache()
        self.refresh()


def _cuda_readable(index: int) -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and index < torch.cuda.device_count())
    except Exception:  # any failure means "not readable here"
        return False


def _nvml_handle(index: int) -> Any:
    try:
        import pynvml  # type: ignore[import-untyped]

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


def _nvml_used(handle: Any) -> int:
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA, onnxruntime and the C heap all say "out of memory" differently."""
    if isinstance(err, MemoryError):
        return True
    text = f"{type(err).__name__}: {err}".lower()
    return "out of memory" in text or "outofmemory" in text or "failed to allocate" in text
