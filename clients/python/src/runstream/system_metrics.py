"""System metrics sampled in the background: CPU, memory, the process, and NVIDIA GPUs.

psutil is used when installed; otherwise Linux's /proc is read directly. GPUs are read with
``nvidia-smi`` only when it is on the PATH. A sampler never raises: what cannot be read is left
out of the sample.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

try:  # optional
    import psutil as _psutil
except ImportError:  # pragma: no cover - depends on the environment
    _psutil = None


def _read_proc_stat() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values), idle


def _read_meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _process_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class SystemSampler:
    """Each ``sample()`` returns metric name -> value for ``system/...`` series."""

    def __init__(self) -> None:
        self._cpu_prev = _read_proc_stat() if _psutil is None else None
        self._proc_prev = (time.monotonic(), sum(os.times()[:2]))
        self._nvidia_smi = shutil.which("nvidia-smi")
        self._proc = _psutil.Process() if _psutil is not None else None
        if _psutil is not None:
            _psutil.cpu_percent(interval=None)  # starts the interval the next call measures

    def sample(self) -> dict[str, float]:
        m: dict[str, float] = {}
        try:
            self._cpu(m)
            self._memory(m)
            self._process(m)
            if self._nvidia_smi:
                self._gpus(m)
        except Exception:  # a sampler that breaks must not break the run
            pass
        return m

    def _cpu(self, m: dict[str, float]) -> None:
        if _psutil is not None:
            m["system/cpu_percent"] = float(_psutil.cpu_percent(interval=None))
            return
        now = _read_proc_stat()
        if now is not None and self._cpu_prev is not None:
            total = now[0] - self._cpu_prev[0]
            idle = now[1] - self._cpu_prev[1]
            if total > 0:
                m["system/cpu_percent"] = 100.0 * (total - idle) / total
        self._cpu_prev = now

    def _memory(self, m: dict[str, float]) -> None:
        if _psutil is not None:
            vm = _psutil.virtual_memory()
            m["system/memory_used_bytes"] = float(vm.total - vm.available)
            m["system/memory_percent"] = float(vm.percent)
            return
        info = _read_meminfo()
        total, avail = info.get("MemTotal"), info.get("MemAvailable")
        if total and avail is not None:
            m["system/memory_used_bytes"] = float(total - avail)
            m["system/memory_percent"] = 100.0 * (total - avail) / total

    def _process(self, m: dict[str, float]) -> None:
        rss = self._proc.memory_info().rss if self._proc is not None else _process_rss()
        if rss is not None:
            m["system/process/rss_bytes"] = float(rss)
        now = (time.monotonic(), sum(os.times()[:2]))
        wall = now[0] - self._proc_prev[0]
        if wall > 0:
            m["system/process/cpu_percent"] = 100.0 * (now[1] - self._proc_prev[1]) / wall
        self._proc_prev = now

    def _gpus(self, m: dict[str, float]) -> None:
        assert self._nvidia_smi is not None
        fields = "utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
        r = subprocess.run(
            [self._nvidia_smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if r.returncode != 0:
            return
        for i, line in enumerate(r.stdout.strip().splitlines()):
            parts = [p.strip() for p in line.split(",")]
            names = ("utilization_percent", "memory_used_bytes", "memory_total_bytes",
                     "temperature_c", "power_watts")
            scale = (1.0, 1 << 20, 1 << 20, 1.0, 1.0)
            for name, k, raw in zip(names, scale, parts):
                try:
                    m[f"system/gpu/{i}/{name}"] = float(raw) * k
                except ValueError:  # "[N/A]"
                    continue


def describe() -> dict[str, Any]:
    """Static facts about the machine for the run's attributes."""
    out: dict[str, Any] = {}
    info = _read_meminfo()
    if _psutil is not None:
        out["sys/memory_total_bytes"] = int(_psutil.virtual_memory().total)
    elif "MemTotal" in info:
        out["sys/memory_total_bytes"] = info["MemTotal"]
    return out
