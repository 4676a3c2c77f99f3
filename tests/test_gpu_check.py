"""benchmarks/gpu_check.py, the prepared GPU check: its arguments, the steps it plans and the table it writes. Nothing
here trains or measures; the CPU dry run (``--tiny``) proves the commands themselves."""

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
STEPS = ["throughput", "sweep", "cuda_tests", "train_autoencoder", "train_ldm", "generate", "latent_big_batch",
         "sweep_compile"]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_the_device_is_cuda_unless_tiny(gpu_check):
    args = gpu_check.parse_args(["--out", "results"])
    assert (args.device, args.tiny, args.budget) == ("cuda", False, 480.0)
    assert gpu_check.parse_args(["--out", "results", "--tiny"]).device == "cpu"
    assert gpu_check.parse_args(["--out", "results", "--dry-run", "--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--out", "results", "--budget", "0"])


def test_without_cuda_the_gpu_run_stops_saying_so(gpu_check):
    if torch.cuda.is_available():
        gpu_check.check_device("cuda")  # nothing to say
    else:
        with pytest.raises(SystemExit, match="finds no CUDA GPU.*--tiny"):
            gpu_check.check_device("cuda")
    gpu_check.check_device("cpu")


def test_tiny_plans_every_step_on_the_cpu_with_the_full_configs(gpu_check, tmp_path):
    steps = gpu_check.plan(gpu_check.parse_args(["--out", str(tmp_path), "--tiny"]), tmp_path)
    assert [s.name for s in steps] == STEPS
    by_name = {s.name: s for s in steps}
    assert by_name["sweep_compile"].skip and all(s.skip is None for s in steps if s.name != "sweep_compile")
    for step in steps:
        text = shlex.join(step.command)
        assert step.command[0] == sys.executable and step.timeout_s > 0
        assert "--device cpu" in text or step.name == "cuda_tests", text
        scripts = [Path(a) for a in step.command if a.endswith(".py")]
        assert all((gpu_check.REPO / a).is_file() for a in scripts), scripts
    assert "--config full" in shlex.join(by_name["train_autoencoder"].command)
    assert "--config full" in shlex.join(by_name["train_ldm"].command)
    assert by_name["train_ldm"].needs == "train_autoencoder" and by_name["generate"].needs == "train_ldm"
    assert "tests/test_speed.py" in by_name["cuda_tests"].command  # the file whose test is marked cuda

    def flipped(command):
        return command[command.index("--flip") + 1:command.index("--json")]
    assert flipped(by_name["sweep"].command) == ["bf16", "tf32", "channels_last", "fused_adamw", "data_on_device"]
    assert flipped(by_name["sweep_compile"].command) == ["compile"]


def test_the_gpu_plan_uses_the_presets_sizes(gpu_check, tmp_path):
    steps = gpu_check.plan(gpu_check.parse_args(["--out", str(tmp_path)]), tmp_path)
    by_name = {s.name: shlex.join(s.command) for s in steps}
    assert "--batch-size" not in by_name["throughput"] and "--device cuda" in by_name["throughput"]
    assert "--steps 300" in by_name["train_autoencoder"] and "--batch-size" not in by_name["train_ldm"]
    assert "--batch-size 512" in by_name["latent_big_batch"]
    assert sum(s.timeout_s for s in steps if s.skip is None) > gpu_check.BUDGET_S  # the budget decides, not the sum


def test_only_and_the_random_text_encoder(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLDM_TEXT_ENCODER", str(tmp_path / "encoder"))
    args = gpu_check.parse_args(["--out", str(tmp_path), "--random-text-encoder", "--only", "random_text_encoder",
                                 "train_ldm", "generate"])
    steps = gpu_check.plan(args, tmp_path)
    assert [s.name for s in steps] == ["random_text_encoder", "train_ldm", "generate"]
    assert all(s.env["TINYLDM_TEXT_ENCODER"] == str(tmp_path / "random-text-encoder") for s in steps[1:])
    with pytest.raises(SystemExit, match="unknown step.*nope"):
        gpu_check.plan(gpu_check.parse_args(["--out", str(tmp_path), "--only", "nope"]), tmp_path)


def test_missing_offline_copies_are_named_for_the_steps_they_break(gpu_check, tmp_path, monkeypatch):
    monkeypatch.delenv("TINYLDM_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setenv("TINYLDM_TEXT_ENCODER", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # a model folder without weights
    args = gpu_check.parse_args(["--out", str(tmp_path), "--tiny"])
    _, problems = gpu_check.requirements(args, gpu_check.plan(args, tmp_path))
    assert any("TINYLDM_LPIPS_WEIGHTS" in p and "train_autoencoder" in p for p in problems)
    assert any("holds no weights" in p and "--random-text-encoder" in p for p in problems)
    args = gpu_check.parse_args(["--out", str(tmp_path), "--tiny", "--only", "sweep"])
    assert not [p for p in gpu_check.requirements(args, gpu_check.plan(args, tmp_path))[1] if "TINYLDM" in p]


def test_the_table_holds_every_kind_of_figure(gpu_check, tmp_path):
    throughput = {"latent_batch": 128, "latent_images_per_s": 9000.0, "latent_step_ms": 14.2,
                  "latent_peak_memory_MB": 2048.0, "latent_MFU": 0.21, "pixel_images_per_s": "failed"}
    results = [
        {"name": "throughput", "kind": "throughput", "figures": throughput, "status": "failed: pixel_images_per_s"},
        {"name": "sweep", "kind": "throughput", "figures": {"tf32_speedup": 1.07, "baseline_drift": 0.01}},
        {"name": "cuda_tests", "kind": "pytest", "figures": {"passed": 1, "skipped": 0, "failures": 0, "errors": 0}},
        {"name": "train_ldm", "kind": "train", "figures": {"steps_run": 300, "steps_per_s": 12.5,
                                                           "images_per_second": 1600.0, "train_seconds": 24.0,
                                                           "wall_seconds": 41.0}},
        {"name": "generate", "kind": "generate", "figures": {"images": 16}, "seconds": 9.5},
        {"name": "sweep_compile", "kind": "throughput", "figures": {}, "status": "not run: out of time"},
    ]
    for r in results:
        r.update({"seconds": r.get("seconds", 1.0), "status": r.get("status", "ok"), "command": "x", "log_tail": ""})
    header = {"tiny": False, "budget_s": 480.0, "total_s": 470.0, "problems": [],
              "machine": {"gpu": "NVIDIA H200", "torch": "2.11.0", "torch_cuda": "13.0"}}
    gpu_check.write_results(tmp_path, header, results)
    table = (tmp_path / "results.txt").read_text()
    for expected in ("NVIDIA H200", "latent: batch 128, 9000.0 img/s, 14.2 ms/step, 2.00 GiB, MFU 21.0%",
                     "pixel: failed", "tf32 x1.07 (drift 1%)", "1 passed", "12.50 steps/s", "16 images in 9.5 s",
                     "sweep_compile: not run: out of time"):
        assert expected in table, table
    assert {"results.json", "results.txt", "log.txt"} <= {p.name for p in tmp_path.iterdir()}
