"""One prepared check of tinyldm on a CUDA GPU: throughput, the speed switches, the CUDA tests, a short full-size run.

Each step runs in its own process with its own time limit, and all of them within ``--budget`` seconds (default
480: eight minutes on one H100/H200-class GPU). A step that fails or runs out of time is recorded and the next one
runs; a step that has no time left is recorded as not run. In this order:

1. ``throughput``: ``benchmarks/throughput.py`` on the three full configs (autoencoder, pixel, latent) at their
   presets' batches: images/s, step time, peak GPU memory and MFU against the GPU's dense bf16 peak;
2. ``sweep``: ``throughput.py --sweep`` on ``latent``, flipping bf16, TF32, channels_last, fused AdamW and the
   training tensor kept on the GPU, each on its own against the defaults;
3. ``cuda_tests``: ``pytest -m cuda`` on the test files that mark tests ``cuda``;
4. ``train_autoencoder``, ``train_ldm``, ``generate``: the real command, ``tinyldm train autoencoder --config
   full`` for 300 steps on 8,192 Shapes images, ``tinyldm train ldm --config full`` on its latents for 300 steps,
   then ``tinyldm generate`` from that pipeline: steps/s, images/s and wall time of each. This proves that the
   commands run end to end on CUDA; 300 steps reach no quality;
5. ``latent_big_batch``: ``latent`` at batch 512 instead of 128, the first lever on MFU for 8x8 latents;
6. ``sweep_compile``: the sweep flipping ``torch.compile`` alone; it compiles first, the slowest step, so it
   comes last and gets the time that is left.

It writes into ``--out``: ``results.json`` (the machine, the versions of torch, CUDA and the packages, what was
found missing, and each step's command, status, seconds and figures), ``results.txt`` (the short table),
``log.txt`` (the end of each step's output) and ``generate_grid.png``. Run folders, whole logs and the latent cache
go into ``--work`` (default: a new temporary folder), which a later call can reuse with ``--only``.

``--tiny`` runs the same steps on the CPU at tiny sizes (batches of 2, 1 to 2 steps, 16 images, one thread) in a
minute or two, so that a typo costs no GPU time. It leaves out ``sweep_compile``: compiling the full latent
UNet takes over three minutes on a CPU. Without ``--tiny``, ``--device`` is ``cuda`` and the script stops at once,
saying so, on a machine where PyTorch finds no CUDA GPU. It also stops before any step, saying what, when a package
or an offline copy is missing (``--ignore-missing`` runs anyway): without network a download can hang until a step's
time is up.

On a GPU machine without network
--------------------------------
It needs the tinyldm checkout and the PyTorch there, as ``pyproject.toml``'s ranges allow (torch >= 2.4,
torchvision >= 0.19, transformers >= 4.40; the script records the versions and prints what is missing):

- ``tinyldm`` itself installs nothing: the script puts the checkout on ``PYTHONPATH`` for every step (or
  ``python3 -m pip install --no-deps --no-build-isolation -e .``, which needs no network).
- ``lpips`` is seldom preinstalled. It is one pure-Python wheel: ``pip download lpips==0.1.4 --no-deps -d wheels``
  where there is a network, then ``python3 -m pip install --no-index --no-deps wheels/lpips-0.1.4-py3-none-any.whl``
  there. Its own needs (torch, torchvision, numpy, scipy, tqdm) usually are there. Any other missing dependency
  comes the same way; ipywidgets (lesson widgets) and diffusers (one reference test) are not used here.
- The offline copies of the README's "Offline use": ``TINYLDM_LPIPS_WEIGHTS`` (AlexNet features, 9.5 MB) for the
  full autoencoder's LPIPS loss, and ``TINYLDM_TEXT_ENCODER`` (all-MiniLM-L6-v2, 90 MB) for ``train ldm --config
  full`` and ``generate``. Where the encoder's weights cannot be brought, its folder without ``model.safetensors``
  (config and tokenizer files, under 1 MB) and ``--random-text-encoder`` build the same network with random
  weights: it trains and samples at the same speed and means nothing. ``TINYLDM_DATASET_MIRROR`` is not needed:
  the full presets train on Shapes, drawn on the fly. ``HF_HUB_OFFLINE=1`` stops transformers trying the network.

Then, from the checkout::

    export TINYLDM_LPIPS_WEIGHTS=weights/alexnet-features.safetensors TINYLDM_TEXT_ENCODER=weights/all-MiniLM-L6-v2
    export HF_HUB_OFFLINE=1
    python3 benchmarks/gpu_check.py --out gpu-check                        # about eight minutes
    python3 benchmarks/gpu_check.py --out gpu-check-2 --work WORK --only generate sweep_compile   # steps again

and first, on any CPU (a minute or two)::

    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --tiny --out /tmp/gpu-check-tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 480.0  # eight minutes for the whole check
PROMPT = "a large red circle at the top left"
PACKAGES = ("torch", "torchvision", "transformers", "tokenizers", "safetensors", "lpips", "numpy", "pillow",
            "matplotlib", "tqdm", "pytest")
# A stand-in for the frozen text encoder: its network from its config, random weights, its tokenizer.
RANDOM_TEXT_ENCODER = """import sys, torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
source, folder = sys.argv[1:]
torch.manual_seed(0)
AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(folder)
AutoTokenizer.from_pretrained(source).save_pretrained(folder)
"""


@dataclass
class Sizes:
    """How big each step is: the GPU run's sizes, or ``--tiny``'s for a CPU."""

    throughput: list[str]  # extra arguments of throughput.py (batch, steps)
    train_steps: int  # optimiser steps of each training command
    num_images: int  # distinct training images of the short run
    generate_images: int  # images drawn by generate
    big_batch: int  # the latent config's larger batch
    threads: list[str] = field(default_factory=list)  # --threads of every command, if any
    train_batch: list[str] = field(default_factory=list)  # --batch-size of the training commands (the presets')


GPU_SIZES = Sizes([], 300, 8192, 16, 512)
TINY_SIZES = Sizes(["--batch-size", "2", "--steps", "1", "--warmup", "0"], 2, 16, 2, 4, ["--threads", "1"],
                   ["--batch-size", "2"])


@dataclass
class Step:
    """One command of the check and how to read its figures."""

    name: str
    command: list[str]
    timeout_s: float
    kind: str  # "throughput", "pytest", "train", "generate" or "prepare": what its figures are read from
    output: Path | None = None  # the file or folder the figures are read from
    needs: str | None = None  # a step of this call that must have succeeded first
    skip: str | None = None  # why it does not run, if it does not
    env: dict[str, str] = field(default_factory=dict)  # variables set for this step only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.txt, log.txt")
    parser.add_argument("--work", type=Path, default=None, help="folder for run folders, logs and caches "
                        "(default: a new temporary folder)")
    parser.add_argument("--tiny", "--dry-run", action="store_true", help="the same steps at tiny sizes, on a CPU")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda; cpu with --tiny)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for all steps (default {BUDGET_S:g})")
    parser.add_argument("--only", nargs="+", default=None, metavar="STEP", help="run these steps only")
    parser.add_argument("--ignore-missing", action="store_true",
                        help="run even when a package or an offline copy is missing (its steps then fail, or hang "
                             "on a download until their time is up)")
    parser.add_argument("--random-text-encoder", action="store_true",
                        help="train ldm with random weights in $TINYLDM_TEXT_ENCODER's network (same speed)")
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget:g}")
    return args


def check_device(device: str) -> None:
    """Stop, saying why, when ``device`` is CUDA and PyTorch finds no CUDA GPU here."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA GPU on "
                         "this machine. Run it on a GPU machine, or with --tiny for the CPU dry run.")


def plan(args: argparse.Namespace, work: Path) -> list[Step]:
    """The steps of the check, in order, with their commands."""
    size, py, device = TINY_SIZES if args.tiny else GPU_SIZES, sys.executable, args.device
    bench = [py, str(REPO / "benchmarks" / "throughput.py"), "--device", device, *size.threads, *size.throughput]
    sweep = [*bench, "--configs", "latent", "--sweep", "--flip"]
    tinyldm = [py, "-m", "tinyldm"]
    train = ["--config", "full", "--steps", str(size.train_steps), "--num-images", str(size.num_images),
             "--device", device, *size.threads, *size.train_batch]
    cuda_files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                        if "mark.cuda" in p.read_text())
    big = [*bench, "--configs", "latent", "--batch-size", str(size.big_batch)]  # the last --batch-size counts
    steps = [
        Step("throughput", [*bench, "--json", str(work / "throughput.json")], 180, "throughput",
             work / "throughput.json"),
        Step("sweep", [*sweep, "bf16", "tf32", "channels_last", "fused_adamw", "data_on_device",
                       "--json", str(work / "sweep.json")], 180, "throughput", work / "sweep.json"),
        Step("cuda_tests", [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                            f"--junitxml={work / 'cuda_tests.xml'}", *cuda_files], 120, "pytest",
             work / "cuda_tests.xml", skip=None if cuda_files else "no test file marks a test cuda"),
        Step("train_autoencoder", [*tinyldm, "train", "autoencoder", *train, "--out", str(work / "autoencoder")],
             150, "train", work / "autoencoder"),
        Step("train_ldm", [*tinyldm, "train", "ldm", *train, "--autoencoder", str(work / "autoencoder"),
                           "--out", str(work / "ldm")], 150, "train", work / "ldm", needs="train_autoencoder"),
        Step("generate", [*tinyldm, "generate", "--checkpoint", str(work / "ldm"), "--prompt", PROMPT,
                          "--num-images", str(size.generate_images), "--out", str(work / "generate"),
                          "--device", device, *size.threads], 90, "generate", work / "generate", needs="train_ldm"),
        Step("latent_big_batch", [*big, "--json", str(work / "big_batch.json")], 90, "throughput",
             work / "big_batch.json"),
        Step("sweep_compile", [*sweep, "compile", "--json", str(work / "sweep_compile.json")], 240, "throughput",
             work / "sweep_compile.json",
             skip="--tiny: compiling the full latent UNet takes over three minutes on a CPU" if args.tiny else None),
    ]
    if args.random_text_encoder:
        source = os.environ.get("TINYLDM_TEXT_ENCODER", "")
        standin = work / "random-text-encoder"
        steps.insert(4, Step("random_text_encoder", [py, "-c", RANDOM_TEXT_ENCODER, source, str(standin)], 120,
                             "prepare", skip=None if source else "TINYLDM_TEXT_ENCODER is not set"))
        for step in steps[5:7]:
            step.env["TINYLDM_TEXT_ENCODER"] = str(standin)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in steps})
        if unknown:
            raise SystemExit(f"gpu_check: unknown step(s) {', '.join(unknown)}; the steps are "
                             + ", ".join(s.name for s in steps))
        steps = [s for s in steps if s.name in args.only]
    return steps


def requirements(args: argparse.Namespace, steps: list[Step]) -> tuple[dict[str, str | None], list[str]]:
    """The versions of the packages the steps import, and what is missing for the planned ``steps``, each problem
    naming the steps it breaks."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    problems = [f"package {name} is not installed: every step imports it" + (" (a pure-Python wheel, see this "
                "script's docstring)" if name == "lpips" else "") for name, version in versions.items() if not version]
    planned = {step.name for step in steps}
    lpips_weights = os.environ.get("TINYLDM_LPIPS_WEIGHTS")
    if planned & {"throughput", "train_autoencoder"} and not (lpips_weights and Path(lpips_weights).is_file()):
        problems.append(f"TINYLDM_LPIPS_WEIGHTS={lpips_weights!r} is no file: offline, throughput's autoencoder and "
                        "train_autoencoder try to download AlexNet")
    encoder = os.environ.get("TINYLDM_TEXT_ENCODER")
    if planned & {"train_ldm", "generate", "random_text_encoder"}:
        if not encoder or not Path(encoder, "config.json").is_file():
            problems.append(f"TINYLDM_TEXT_ENCODER={encoder!r} is no model folder: offline, train_ldm and generate "
                            "fail")
        elif not any(Path(encoder).glob("*.safetensors")) and not args.random_text_encoder:
            problems.append(f"TINYLDM_TEXT_ENCODER={encoder} holds no weights: add --random-text-encoder")
    return versions, problems


def machine() -> dict[str, object]:
    """The machine and the software the figures were measured with."""
    import torch

    found: dict[str, object] = {"python": sys.version.split()[0], "torch": torch.__version__,
                                "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        found.update(gpu=properties.name, gpu_count=torch.cuda.device_count(),
                     gpu_memory_GiB=round(properties.total_memory / 2**30, 1),
                     compute_capability=f"{properties.major}.{properties.minor}",
                     cudnn=torch.backends.cudnn.version())
        try:
            found["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                             capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found["driver"] = None
    return found


def run_step(step: Step, timeout_s: float, env: dict[str, str], log: Path) -> tuple[str, int | None, float]:
    """Run one step in its own process group, its output into ``log``; (status, return code, seconds)."""
    started = time.monotonic()
    with open(log, "w") as sink:
        process = subprocess.Popen(step.command, cwd=REPO, env={**env, **step.env}, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # the whole group: throughput.py and compile spawn workers
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            return f"timed out: after {timeout_s:.0f} s", None, time.monotonic() - started
    return "ok" if code == 0 else f"failed: exit code {code}", code, time.monotonic() - started


def figures(step: Step) -> dict[str, object]:
    """What a step measured, read from the file or folder it wrote."""
    if step.output is None or not step.output.exists():
        return {}
    if step.kind == "throughput":
        return json.loads(step.output.read_text())
    if step.kind == "pytest":
        suite = ElementTree.parse(step.output).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}
    if step.kind == "train":
        record = json.loads((step.output / "run.json").read_text())["runs"][-1]
        return {**record, "steps_per_s": record["steps_run"] / max(record["train_seconds"], 1e-9)}
    if step.kind == "generate":
        return {"images": len(list(step.output.glob("sample_*.png")))}
    return {}


def summary(result: dict) -> str:
    """A step's figures on one or a few short lines, for the text table."""
    f, kind = result["figures"], result["kind"]
    if kind == "throughput" and "sweep" in result["name"]:
        flips = [f"{k[:-8]} x{v:.2f}" if isinstance(v, float) else f"{k[:-8]} {v}"
                 for k, v in f.items() if k.endswith("_speedup")]
        return ", ".join(flips) + (f" (drift {f['baseline_drift']:.0%})" if "baseline_drift" in f else "") or \
            "nothing flipped on this device"
    if kind == "throughput":
        configs = [c for c in ("autoencoder", "pixel", "latent") if f"{c}_images_per_s" in f]
        return "\n".join(f"{c}: failed" if f[f"{c}_images_per_s"] == "failed" else
                         f"{c}: batch {f[c + '_batch']}, {f[c + '_images_per_s']:.1f} img/s, "
                         f"{f[c + '_step_ms']:.1f} ms/step, {f[c + '_peak_memory_MB'] / 1024:.2f} GiB, "
                         f"MFU {f[c + '_MFU']:.1%}" for c in configs)
    if kind == "pytest" and f:
        return f"{f['passed']} passed, {f['skipped']} skipped, {f['failures']} failed, {f['errors']} errors"
    if kind == "train" and f:
        return (f"{f['steps_run']} steps, {f['steps_per_s']:.2f} steps/s, {f['images_per_second']:.0f} img/s, "
                f"train {f['train_seconds']:.0f} s of {f['wall_seconds']:.0f} s")
    if kind == "generate" and f:
        return f"{f['images']} images in {result['seconds']:.1f} s, loading included"
    return ""


def tail(log: Path, lines: int = 40) -> str:
    """The last lines of a log, each progress bar's carriage-returned redraws reduced to the last one."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])


def write_results(out: Path, header: dict, results: list[dict]) -> None:
    """results.json (everything), results.txt (the table) and log.txt (the end of each step's output)."""
    (out / "results.json").write_text(json.dumps({**header, "steps": results}, indent=2, default=str) + "\n")
    m = header["machine"]
    rows = [f"tinyldm GPU check{' (--tiny)' if header['tiny'] else ''} on {m.get('gpu', 'cpu')}: torch {m['torch']}, "
            f"CUDA {m['torch_cuda']}, {header['total_s']:.0f} s of {header['budget_s']:.0f}",
            *(f"missing: {p}" for p in header["problems"]), "",
            f"{'step':<20} {'status':<24} {'seconds':>8}  figures"]
    for r in results:
        lines = (summary(r) if r["figures"] else "").splitlines() or [""]
        rows.append(f"{r['name']:<20} {r['status'].split(':')[0]:<24} {r['seconds']:>8.1f}  {lines[0]}")
        rows.extend(f"{'':<55}{line}" for line in lines[1:])
    rows.extend(f"{r['name']}: {r['status']}" for r in results if ":" in r["status"])  # the reasons, in full
    (out / "results.txt").write_text("\n".join(rows) + "\n")
    (out / "log.txt").write_text("".join(f"===== {r['name']}: {r['status']}\n$ {r['command']}\n{r['log_tail']}\n\n"
                                         for r in results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_device(args.device)
    started = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="tinyldm-gpu-check-"))
    for folder in (args.out, work, work / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    steps = plan(args, work)
    versions, problems = requirements(args, steps)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("TINYLDM_CACHE", str(work / "cache"))
    header = {"tiny": args.tiny, "device": args.device, "budget_s": args.budget, "total_s": 0.0,
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "work": str(work), "machine": machine(),
              "packages": versions, "problems": problems,
              "environment": {k: os.environ.get(k) for k in ("TINYLDM_LPIPS_WEIGHTS", "TINYLDM_TEXT_ENCODER",
                              "TINYLDM_DATASET_MIRROR", "TINYLDM_CACHE", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")}}
    print(f"gpu_check: {len(steps)} steps on {args.device} within {args.budget:.0f} s; work folder {work}")
    for problem in problems:
        print(f"gpu_check: missing: {problem}")
    if problems and not args.ignore_missing:
        print("gpu_check: stopped before any step; bring what is missing (see this script's docstring), or pass "
              "--ignore-missing to run anyway")
        write_results(args.out, header, [])
        return 2
    results: list[dict] = []
    for step in steps:
        log = work / "logs" / f"{step.name}.log"
        left = args.budget - (time.monotonic() - started)
        failed_need = next((r for r in results if r["name"] == step.needs and r["status"] != "ok"), None)
        status, code, seconds, log_tail = "skipped: " + step.skip if step.skip else None, None, 0.0, ""
        if status is None and failed_need:
            status = f"not run: {step.needs} {failed_need['status']}"
        elif status is None and left < 15:
            status = "not run: out of time"
        elif status is None:
            print(f"gpu_check: {step.name} (at most {min(step.timeout_s, left):.0f} s): {shlex.join(step.command)}",
                  flush=True)
            if step.kind == "train" and step.output.exists():  # a step run again with --only starts afresh
                shutil.rmtree(step.output)
            status, code, seconds = run_step(step, min(step.timeout_s, left), env, log)
            log_tail = tail(log)
        try:
            found = figures(step) if code == 0 else {}
        except (OSError, ValueError, KeyError, ElementTree.ParseError) as error:
            found, status = {}, f"failed: figures unreadable ({error})"
        if any(value == "failed" for value in found.values()):
            status = "failed: " + ", ".join(k for k, v in found.items() if v == "failed")
        results.append({"name": step.name, "kind": step.kind, "status": status, "returncode": code,
                        "seconds": round(seconds, 1), "timeout_s": step.timeout_s, "command": shlex.join(step.command),
                        "env": step.env, "figures": found, "log": str(log), "log_tail": log_tail})
        results[-1]["summary"] = summary(results[-1]) if found else ""
        print(f"gpu_check: {step.name}: {status} ({seconds:.1f} s) {results[-1]['summary']}", flush=True)
        header["total_s"] = round(time.monotonic() - started, 1)
        write_results(args.out, header, results)
    grid = work / "generate" / "grid.png"
    if grid.exists():
        shutil.copyfile(grid, args.out / "generate_grid.png")
    print((args.out / "results.txt").read_text())
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
