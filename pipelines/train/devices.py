"""Where training and in-process inference run: the ``device``, ``precision`` and ``num_processes`` parameters.

``auto`` picks CUDA if present, else Apple MPS, else the CPU; precision ``auto`` picks bf16 on a
GPU that supports it, else fp16 (with loss scaling) on CUDA, else fp32. A request the machine cannot
serve (``cuda`` without CUDA, ``num_processes`` above the devices, fp16 on the CPU) is a ConfigError
naming the parameter, raised before any data or weights load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.config import ConfigError
from scoring.machine import cores

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Placement:
    """The resolved device, precision and process count of a training run."""

    device: str  # cpu | cuda | mps
    precision: str  # fp32 | bf16 | fp16
    num_processes: int

    @property
    def backend(self) -> str:
        """torch.distributed's backend for ``num_processes > 1``: NCCL on CUDA, gloo elsewhere."""
        return "nccl" if self.device == "cuda" else "gloo"

    def describe(self) -> str:
        procs = f", {self.num_processes} processes ({self.backend})" if self.num_processes > 1 else ""
        return f"{self.device} {self.precision}{procs}"


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(device: str = "auto") -> str:
    """``auto`` → cuda | mps | cpu, whichever this machine has first; a named device must exist."""
    if device not in DEVICES:
        raise ConfigError(f"parameter device: must be one of {', '.join(DEVICES)} (got {device!r})")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device seen"
        raise ConfigError(f"parameter device: cuda asked for, but torch {torch.__version__} has no CUDA device "
                          f"({build}); use device auto or cpu")
    if device == "mps" and not _mps_available():
        raise ConfigError("parameter device: mps asked for, but Apple's MPS backend is not available here; "
                          "use device auto or cpu")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → bf16 | fp16 | fp32 for ``device``; a named precision the device lacks is refused."""
    if precision not in PRECISIONS:
        raise ConfigError(f"parameter precision: must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    bf16_ok = device == "cpu" or (device == "cuda" and torch.cuda.is_bf16_supported()) or device == "mps"
    if precision == "auto":
        if device == "cuda":
            return "bf16" if bf16_ok else "fp16"
        return "fp32"
    if precision == "fp16" and device == "cpu":
        raise ConfigError("parameter precision: fp16 needs a GPU (mixed precision with loss scaling runs on "
                          "CUDA or MPS); on the CPU use fp32 (or bf16)")
    if precision == "bf16" and not bf16_ok:
        name = torch.cuda.get_device_name() if device == "cuda" else device
        raise ConfigError(f"parameter precision: bf16 is not supported by {name}; use fp16 or auto")
    return precision


def device_count(device: str) -> int:
    """How many processes ``device`` can hold: GPUs for cuda, one for mps, the cores for the CPU."""
    if device == "cuda":
        return torch.cuda.device_count()
    if device == "mps":
        return 1
    return cores()


def resolve(device: str = "auto", precision: str = "auto", num_processes: int = 1) -> Placement:
    """The placement of a training run, or a ConfigError naming the parameter that cannot be served."""
    chosen = resolve_device(device)
    chosen_precision = resolve_precision(precision, chosen)
    available = device_count(chosen)
    if num_processes < 1:
        raise ConfigError(f"parameter num_processes: must be at least 1 (got {num_processes})")
    if num_processes > available:
        what = {"cuda": "CUDA devices", "mps": "MPS device", "cpu": "CPU cores"}[chosen]
        raise ConfigError(f"parameter num_processes: {num_processes} processes asked for, but this machine has "
                          f"{available} {what}")
    return Placement(chosen, chosen_precision, num_processes)


def per_device_batch(batch_size: int, gradient_accumulation_steps: int, placement: Placement) -> int:
    """``batch_size`` is the effective batch: processes x per-device batch x accumulation steps."""
    parts = placement.num_processes * gradient_accumulation_steps
    if batch_size % parts:
        raise ConfigError(f"parameter batch_size: {batch_size} is the effective batch and must divide by "
                          f"num_processes x gradient_accumulation_steps = {parts}")
    return batch_size // parts


def inference_device(device: str = "auto") -> torch.device:
    """The torch device for scoring in evaluation, the monitor's profile and held-out sets (fp32 always)."""
    return torch.device(resolve_device(device))
