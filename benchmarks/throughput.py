"""How fast do the ``full`` presets train? Images/s, step time, peak memory and model FLOPs utilisation (MFU).

For each full config (``autoencoder``, ``pixel``, ``latent``; all at 64x64) the real model and the real training
step (``full_steps.py`` says what each step holds, and what stands in for the frozen text encoder), run a few
warm-up steps and then timed ones, each config in a fresh process so that its peak memory and compiled code are
its own. Reported per config:

- trainable parameters and the batch size; images/s and the median step time (``step_spread`` is the range of
  the timed steps over their median: a busy machine shows up there);
- peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (weights, gradients, optimiser state and activations);
  on a CPU the growth of the peak resident set over the process before the model was built, and that peak;
- FLOPs per step, counted with ``torch.utils.flop_counter.FlopCounterMode`` over one whole training step:
  matmuls, convolutions and attention, 2 FLOPs per multiply-add, forward and backward (about 3x a forward pass,
  reported as ``step_over_forward``); element-wise work (norms, activations, AdamW, EMA) is not counted, as usual
  for MFU. Attention runs on PyTorch's math kernel while counting (the CPU's fused kernel is not counted), so the
  count is the same on every device;
- achieved FLOP/s and MFU = achieved / peak. The peak is the GPU's dense bf16 tensor-core peak from its datasheet
  (``GPU_BF16_PEAK_TFLOPS``; another GPU needs ``--peak-tflops``), with a measured 8192^2 bf16 matmul beside it,
  and on a CPU the measured speed of a 2048^2 float32 matmul with the same threads. CPU figures are not GPU
  figures. The target is MFU >= 30% of the bf16 peak for ``latent`` on one H100-class GPU.

The speed switches (``--bf16``/``--no-bf16`` and so on) default to what the training loops do today: bf16 autocast
on CUDA, nothing else. CUDA-only switches are skipped on a CPU with the reason printed. ``--sweep`` measures one
config with each switch flipped, one at a time, against those defaults (measured before and after, so that a
machine whose speed drifts shows it), and says which help on this device: a switch becomes a default of the loops
only where it is measured to help. (DataLoader workers and pinned memory are not among them: the loops train from
an in-memory tensor, and so does this script.)

Usage::

    python benchmarks/throughput.py --threads 2                    # CPU: batch 8, 1 warm-up and 3 timed steps
    python benchmarks/throughput.py --device cuda --json out.json  # GPU: the presets' batches, 5 + 20 steps
    python benchmarks/throughput.py --device cuda --configs latent --sweep
    python benchmarks/throughput.py --device cuda --configs latent --sweep --flip compile  # one switch only

The GPU figures have not been measured yet; only CPU ones have. ``benchmarks/gpu_check.py`` runs this script on
the three configs and the sweep, with the CUDA tests and a short full-size run, in one go on a GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import queue
import re
import resource
import statistics
import time
import traceback
from pathlib import Path

import torch
from full_steps import CONFIGS, SWITCHES, build, preset_batch_size
from report import chosen_device, machine_options, report  # siblings in benchmarks/: scripts run from here
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks in TFLOP/s, matched against the CUDA device name, from NVIDIA's datasheets (whose
# headline figures are often with 2:4 sparsity, twice these): H100 (SXM5 989.4, PCIe 756), H200 (SXM 989.4), A100
# (312), L4 (121); the RTX 4090 from the Ada Lovelace architecture whitepaper (bf16, FP32 accumulate: 165.2).
GPU_BF16_PEAK_TFLOPS = ((r"H100.*PCIe", 756.0), (r"H100.*(HBM3|SXM)", 989.4), (r"H200(?!.*NVL)", 989.4),
                        (r"A100", 312.0), (r"\bL4\b", 121.0), (r"RTX 4090", 165.2))
CPU_SKIPS = {"bf16": "the training loops autocast to bf16 only on CUDA",
             "tf32": "TF32 is a mode of NVIDIA tensor cores",
             "channels_last": "the training loops switch to channels_last only on CUDA",
             "fused_adamw": "the fused AdamW kernel measured here is the CUDA one",
             "data_on_device": "the training tensor is on the CPU already"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> float:
    """The resident set now (Linux), else the peak so far."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def measure(config: str, batch: int, steps: int, warmup: int, device: torch.device, s: dict[str, bool]) -> dict:
    """Build one config, time its training steps, then count the FLOPs of one step and of one forward pass."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _rss_bytes()
    bench = build(config, batch, device, s)
    for _ in range(warmup):
        bench.step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        bench.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        memory = {"peak_memory_MB": torch.cuda.max_memory_allocated(device) / 2**20}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux reports KiB
        memory = {"peak_memory_MB": (peak - base) / 2**20, "peak_rss_MB": peak / 2**20}
    counted = []
    eager = torch.compiler.set_stance("force_eager") if s["compile"] else contextlib.nullcontext()
    for run in (bench.step, bench.forward):  # eager, on the math attention kernel: the same count everywhere
        with eager, sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run()
        counted.append(counter.get_total_flops())
    step_s = statistics.median(times)
    return {"parameters": bench.parameters, "batch": batch, "images_per_s": batch / step_s, "step_ms": 1e3 * step_s,
            "step_spread": (max(times) - min(times)) / step_s, **memory, "GFLOP_per_step": counted[0] / 1e9,
            "step_over_forward": counted[0] / counted[1], "achieved_TFLOP_per_s": counted[0] / step_s / 1e12,
            "notes": bench.notes}


def _child(args: tuple, threads: int | None, answers) -> None:
    try:
        if threads:
            torch.set_num_threads(threads)
        answers.put(measure(*args))
    except Exception:  # reported by the parent, which must not wait for an answer that never comes
        answers.put({"error": traceback.format_exc()})


def run(config: str, batch: int, steps: int, warmup: int, device: torch.device, s: dict[str, bool],
        threads: int | None) -> dict:
    """``measure`` in a fresh (spawned) process; {"error": ...} if it failed."""
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    process = context.Process(target=_child, args=((config, batch, steps, warmup, device, s), threads, answers))
    process.start()
    while True:
        try:
            result = answers.get(timeout=5)
            break
        except queue.Empty:
            if not process.is_alive():
                result = {"error": f"the process died with exit code {process.exitcode} (out of memory?)"}
                break
    process.join()
    return result


def matmul_flops(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of the fastest of ``repeats`` (n, n) @ (n, n) matmuls (2 n^3 FLOPs each), after one warm-up."""
    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for k in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = best if k == 0 else min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float, str]:
    """The peak that MFU divides by, in FLOP/s, and where it comes from."""
    if given_tflops:
        return given_tflops * 1e12, "--peak-tflops"
    if device.type == "cpu":
        return matmul_flops(device, 2048, torch.float32), "measured: fastest 2048^2 float32 matmul"
    name = torch.cuda.get_device_name(device)
    for pattern, tflops in GPU_BF16_PEAK_TFLOPS:
        if re.search(pattern, name):
            return tflops * 1e12, "dense bf16 datasheet peak"
    raise ValueError(f"no bf16 peak is known for {name!r}; pass --peak-tflops with its dense bf16 tensor-core "
                     "peak from the vendor's datasheet (half the figure with sparsity)")


def unavailable(device: torch.device) -> dict[str, str]:
    """The switches that cannot be measured here, and why."""
    skips = dict(CPU_SKIPS) if device.type == "cpu" else {}
    if not hasattr(torch.compiler, "set_stance"):
        skips["compile"] = f"the FLOPs are counted eagerly with torch.compiler.set_stance (torch >= 2.6), " \
                           f"this is torch {torch.__version__}"
    return skips


def compare(name: str, on: dict, off: dict, drift: float) -> tuple[dict[str, float], str]:
    """The figures of switch ``name`` on against off, and a verdict: a change within 5%, the steps' own spread or
    the drift of the defaults between two runs (a busy machine) is no clear change."""
    speedup = on["images_per_s"] / off["images_per_s"]
    noise = max(0.05, on["step_spread"], off["step_spread"], drift)
    verdict = "helps" if speedup >= 1 + noise else "hurts" if speedup <= 1 / (1 + noise) else \
        f"makes no clear change (within {noise:.0%})"
    return {f"{name}_on_images_per_s": on["images_per_s"], f"{name}_off_images_per_s": off["images_per_s"],
            f"{name}_speedup": speedup, f"{name}_on_minus_off_peak_memory_MB":
            on["peak_memory_MB"] - off["peak_memory_MB"]}, f"{name} {verdict}, x{speedup:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    machine_options(parser)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="what to measure")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's on CUDA, 8 on a CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on CUDA, 3 on a CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on CUDA, 1 on a CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the peak for MFU (default: see above)")
    parser.add_argument("--sweep", action="store_true", help="flip each switch in turn against the defaults")
    parser.add_argument("--flip", nargs="+", choices=SWITCHES, default=list(SWITCHES), metavar="SWITCH",
                        help="the switches --sweep flips (default: all of them, " + ", ".join(SWITCHES) + ")")
    for name in SWITCHES:
        parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                            default=None if name == "bf16" else False, help="default: off" if name != "bf16"
                            else "default: on for CUDA")
    args = parser.parse_args()
    device = chosen_device(args)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device} is not measured here: use --device cpu or --device cuda")
    for name, least in (("batch_size", 1), ("steps", 1), ("warmup", 0)):
        if getattr(args, name) is not None and getattr(args, name) < least:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    if args.sweep and len(args.configs) != 1:
        raise ValueError(f"--sweep measures one config, got {args.configs}; e.g. --configs latent --sweep")
    if not args.sweep and args.flip != list(SWITCHES):
        raise ValueError(f"--flip {' '.join(args.flip)} chooses what --sweep flips; add --sweep")
    gpu, skips = device.type == "cuda", unavailable(device)
    steps, warmup = args.steps or (20 if gpu else 3), args.warmup if args.warmup is not None else (5 if gpu else 1)
    switches = {name: gpu if name == "bf16" and args.bf16 is None else bool(getattr(args, name))
                for name in SWITCHES}
    for name in [n for n in SWITCHES if n in skips and (switches[n] or args.sweep and n in args.flip)]:
        print(f"--{name.replace('_', '-')} not measured on this {device.type}: {skips[name]}")
        switches[name] = False
    if not gpu:
        print("note: CPU figures, against the CPU's own measured matmul peak; they say nothing about a GPU")
    peak, source = peak_flops(device, args.peak_tflops)
    figures: dict[str, object] = {"device": torch.cuda.get_device_name(device) if gpu else "cpu",
                                  "threads": torch.get_num_threads(), "peak_TFLOP_per_s": peak / 1e12,
                                  "peak_source": source, "warmup_steps": warmup, "timed_steps": steps}
    if gpu:
        figures["measured_bf16_matmul_TFLOP_per_s"] = matmul_flops(device, 8192, torch.bfloat16) / 1e12
    figures.update({name: "on" if on else "off" for name, on in switches.items()})
    notes: list[str] = []

    def measured(config: str, s: dict[str, bool]) -> dict | None:
        batch = args.batch_size or (preset_batch_size(config) if gpu else 8)
        result = run(config, batch, steps, warmup, device, s, args.threads)
        if "error" in result:
            flipped = [name for name in SWITCHES if s[name] != switches[name]]
            print(f"{config} {'with ' + flipped[0] + ' flipped ' if flipped else ''}failed:\n{result['error']}")
            return None
        result["MFU"] = result["achieved_TFLOP_per_s"] * 1e12 / peak
        notes.extend(n for n in result.pop("notes") if n not in notes)
        return result

    for config in args.configs:
        base = measured(config, switches)
        figures.update({f"{config}_{k}": v for k, v in base.items()} if base else {f"{config}_images_per_s": "failed"})
    flips = {name: measured(config, {**switches, name: not switches[name]})
             for name in SWITCHES if args.sweep and base and name in args.flip and name not in skips}
    if flips:  # the defaults once more: how far the machine's own speed drifted meanwhile
        again = measured(config, switches)
        figures["baseline_drift"] = drift = abs(again["images_per_s"] / base["images_per_s"] - 1) if again else 0.0
    verdicts = []
    for name, flipped in flips.items():
        if flipped is None:
            figures[f"{name}_speedup"] = "failed"
            continue
        compared, verdict = compare(name, *((base, flipped) if switches[name] else (flipped, base)), drift)
        figures.update(compared)
        verdicts.append(verdict)
    report(figures, args.json)
    if verdicts:
        print(f"on this {figures['device']} with {config}: " + "; ".join(verdicts))
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
