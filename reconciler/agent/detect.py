"""What this machine is: GPUs (NVIDIA through NVML), CPUs, memory, OS, and installed backends."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from reconciler.observe import GPUDevice, InstalledBackend

EXECUTABLES = ("llama-box", "llama-server", "vllm", "sglang", "vox-box", "mindie-server", "ray")
VERSION_TIMEOUT = 30


def detect_gpus() -> list[GPUDevice]:
    """NVIDIA GPUs through NVML; an empty list where there is no driver or no GPU."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                utilization = None
            try:
                temperature: float | None = float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError:
                temperature = None
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            found.append(
                GPUDevice(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    vendor="nvidia",
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    memory_total=int(memory.total),
                    memory_used=int(memory.used),
                    utilization=utilization,
                    temperature=temperature,
                )
            )
        return found
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()


def gpu_process_memory() -> dict[int, dict[int, int]]:
    """VRAM bytes per pid per GPU index (NVML's compute and graphics processes); empty without a GPU."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    usage: dict[int, dict[int, int]] = {}
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for query in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    processes = query(handle)
                except pynvml.NVMLError:
                    continue
                for process in processes:
                    used = process.usedGpuMemory  # None where the driver does not say (some vGPUs, WDDM)
                    if used is not None:
                        per_gpu = usage.setdefault(int(process.pid), {})
                        per_gpu[index] = max(per_gpu.get(index, 0), int(used))
        return usage
    except pynvml.NVMLError:
        return usage
    finally:
        pynvml.nvmlShutdown()


def _version(path: str) -> str:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip()[:80] if lines else ""


def detect_backends(data_dir: Path) -> list[InstalledBackend]:
    """Backends on PATH or in ``<data-dir>/bin``, and llama-cpp-python in the agent's own Python."""
    search = os.pathsep.join([str(data_dir / "bin"), os.environ.get("PATH", "")])
    found = []
    for name in EXECUTABLES:
        path = shutil.which(name, path=search)
        if path is not None:
            found.append(InstalledBackend(name=name, version=_version(path), path=path))
    if importlib.util.find_spec("llama_cpp") is not None:
        try:
            version = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            version = ""
        found.append(InstalledBackend(name="llama-cpp", version=version, path=sys.executable))
    return sorted(found, key=lambda b: b.name)


def system() -> dict[str, object]:
    memory = psutil.virtual_memory()
    machine = platform.machine().lower()
    return {
        "os": platform.system().lower(),
        "arch": {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine),
        "cpu_count": psutil.cpu_count() or 1,
        "memory_total": memory.total,
        "memory_used": memory.total - memory.available,
    }
