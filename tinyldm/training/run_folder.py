"""A training run's folder: one shell around both training loops that starts, restores, checkpoints and finishes.

Every loop of the course (``tinyldm.training.diffusion_loop``, ``tinyldm.training.autoencoder_loop``) writes the
same layout:

- ``train_config.json``: the run's settings, written when it starts: the loop's config, the model's, the sha256 of
  the training tensor and whatever the job adds (its preset, its autoencoder). A resume must match them all; only
  how long the run goes and how often it writes may change (``steps``, ``checkpoint_every``, ``sample_every``).
  Because the file is written first, even a killed run guards its data.
- ``loss.jsonl``: one JSON record per step, cut back to the last checkpoint on resume.
- ``train_state.pt``: everything the next step depends on (weights, EMA, optimisers, schedulers, generator
  states), written atomically: a run killed mid-write keeps its previous checkpoint. Restoring it makes a resumed
  run take the very same steps as one that never stopped (on the CPU, bit for bit).
- ``run.json``: what each call of a training job did (settings, machine, timing), written by the jobs.

Two guards keep a folder from being spoilt. A fresh run refuses a folder that already holds a run or a model (it
would overwrite them, and the old model card would then describe the new model). And a run holds a lock on its
folder (``run.lock``, an advisory ``flock`` that the operating system drops when the process ends, however it
ends), so a second run into the same folder, or a resume of a run that is still going, is refused while a killed
run's leftover lock file never blocks its resume.

In a data-parallel run process 0 checks, locks and writes the folder; the others read the same saved state (the
folder must be on a file system every process sees).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

try:  # POSIX; elsewhere the lock is not taken (the other guards still hold)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

import torch
from torch import Tensor

from tinyldm.runtime import atomic_write
from tinyldm.training import distributed

__all__ = ["LOG_NAME", "TRAIN_CONFIG_NAME", "RUN_RECORD_NAME", "STATE_NAME", "LOSS_PLOT_NAME", "LOCK_NAME",
           "LossLog", "RunFolder", "RunFolderBusyError", "save_training_state", "load_training_state",
           "tensor_sha256", "append_run_record", "refuse_to_overwrite"]

LOG_NAME = "loss.jsonl"
TRAIN_CONFIG_NAME = "train_config.json"
RUN_RECORD_NAME = "run.json"
STATE_NAME = "train_state.pt"
LOSS_PLOT_NAME = "loss.png"
LOCK_NAME = "run.lock"
# What a folder holds once a run or an export has written to it: a fresh run refuses to start over any of them.
_RUN_FILES = (STATE_NAME, TRAIN_CONFIG_NAME, LOG_NAME, RUN_RECORD_NAME)
_MODEL_FILES = ("config.json", "model.safetensors")
# Settings a resume may change: how long the run goes and how often it writes, not what a step computes.
_MAY_CHANGE = ("steps", "checkpoint_every", "sample_every")
# Settings added after runs were already being made, with the value every run saved before them used: such a run
# still resumes, as long as it keeps that value.
_ADDED_LATER = {"loss_recipe": "preset", "loss.disc_warmup": 0}
_HASH_CHUNK = 1 << 24  # elements hashed at a time, so a large tensor is never copied whole


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a training state (tensors, numbers, strings, nested dicts and lists) atomically with ``torch.save``."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by ``save_training_state`` onto the CPU.

    ``weights_only=True`` refuses anything but tensors and plain containers, so a tampered file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}; it is written every checkpoint_every steps of a run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise ValueError(f"the training state {path} is damaged ({path.stat().st_size} bytes: {reason}), "
                         "so this run cannot be resumed from it. Checkpoints are written whole, so this comes from a "
                         "copy or a full disk: restore the file from a copy, or start the run again in a new "
                         "folder") from error


def tensor_sha256(tensor: Tensor) -> str:
    """The sha256 of a tensor's dtype, shape and bytes: the identity of a run's training data."""
    digest = hashlib.sha256(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
    flat = tensor.detach().reshape(-1)
    for start in range(0, flat.numel(), _HASH_CHUNK):
        digest.update(flat[start:start + _HASH_CHUNK].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class LossLog:
    """A JSON-lines log, one ``{"step": ..., "loss": ..., ...}`` record per step, that can be cut back on resume.

    Args:
        path: the log file; created on the first write.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far, in order.

        A torn last line (a run killed while appending) is dropped: resuming cuts the log back to the checkpoint,
        which that line is past anyway. A damaged line before the last one is an error naming the line.
        """
        if not self.path.is_file():
            return []
        lines = [(k + 1, line) for k, line in enumerate(self.path.read_text().splitlines()) if line.strip()]
        records = []
        for position, (number, line) in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if position == len(lines) - 1:
                    break
                raise ValueError(f"line {number} of {self.path} is not a JSON record ({line[:60]!r}); the log has "
                                 "been edited or damaged: restore it, or delete the lines from there on") from None
        return records

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Drop the records after ``step`` (those of an interrupted run past its last checkpoint); returns the rest."""
        kept = [r for r in self.records() if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add records at the end of the file."""
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


class RunFolderBusyError(FileExistsError):
    """Another process holds the run folder's lock: it is training into that folder right now."""


def refuse_to_overwrite(out: str | Path, extra: tuple[str, ...] = ()) -> None:
    """Raise FileExistsError when ``out`` already holds a run or a model that a fresh run would overwrite.

    Args:
        out: the folder a new run or model is about to be written into.
        extra: more file names that count (a job's own, e.g. the judge's ``accuracy.json``).
    """
    out = Path(out)
    found = [name for name in (*_RUN_FILES, *_MODEL_FILES, *extra) if (out / name).exists()]
    if not found:
        return
    if (out / STATE_NAME).exists():
        try:
            saved = f"saved at step {load_training_state(out / STATE_NAME)['step']}"
        except ValueError:
            saved = f"its {STATE_NAME} is damaged"
        raise FileExistsError(f"{out} already holds a run ({saved}); pass --resume (resume=True) to continue it, or "
                              "choose another output folder")
    raise FileExistsError(f"{out} already holds {', '.join(found)}: a model or another run's files, which this run "
                          "would overwrite (and their model card and samples would then describe another model); "
                          "choose another output folder (--out), or move those files away first")


class RunFolder:
    """The run folder a training loop writes, or nothing at all when ``out`` is None (a run kept in memory).

    Use it as a context manager: it holds the folder's lock from ``start`` until the run ends, however it ends.

    Args:
        out: the run folder, or None.
        settings: the run's JSON-ready settings (see the module docstring).
        resume: continue the run saved in ``out`` instead of starting one.
    """

    def __init__(self, out: str | Path | None, settings: dict[str, Any], resume: bool):
        self.out = Path(out) if out is not None else None
        self.settings = json.loads(json.dumps(settings))  # tuples -> lists, as the saved file has them
        self.resume = resume
        self.log = LossLog(self.out / LOG_NAME) if self.out is not None else None
        self._lock_fd: int | None = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder's lock (the operating system also drops it when the process ends)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases its flock
            self._lock_fd = None

    def _lock(self) -> None:
        """Take the folder's lock, or raise RunFolderBusyError naming the process that holds it."""
        if fcntl is None:
            return
        fd = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusyError(f"{self.out} is in use: another run (process {holder}) is writing to it right "
                                     "now. Wait for it to finish or stop it, then resume (--resume); or choose "
                                     "another output folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def start(self, parts: dict[str, Any], generators: dict[str, torch.Generator]) -> tuple[int, list[dict]]:
        """Start a fresh run, or check the saved one against ``settings`` and restore it into ``parts``.

        Args:
            parts: what the checkpoint holds, by name: modules, optimisers, schedulers, EMAs (anything with
                ``state_dict``/``load_state_dict``; None for a part this run does not have).
            generators: the run's random generators, by name.
        Returns:
            (steps already done, the log records kept).
        """
        if self.out is None:
            return 0, []
        if distributed.is_main_process():
            state, records = self._open()
        distributed.barrier()
        if not distributed.is_main_process():
            state = load_training_state(self.out / STATE_NAME) if self.resume else None
            records = self.log.records()
        if state is None:
            return 0, records
        for name, part in parts.items():
            if part is not None:
                part.load_state_dict(state[name])
        for name, generator in generators.items():
            generator.set_state(state["generators"][name].to(generator.get_state().device))
        return state["step"], records

    def _open(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        state_path, config_path = self.out / STATE_NAME, self.out / TRAIN_CONFIG_NAME
        if not self.resume:
            refuse_to_overwrite(self.out)  # before the lock file is made: a refused folder is left as it was
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock()
            refuse_to_overwrite(self.out)  # a run that started meanwhile
            config_path.write_text(json.dumps(self.settings, indent=2) + "\n")
            self.log.path.write_text("")
            return None, []
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume in {self.out}: no {STATE_NAME} there; drop --resume "
                                    "(resume=False) to start a new run")
        self._lock()
        try:
            saved = _flat(json.loads(config_path.read_text()))
            saved = {**{k: v for k, v in _ADDED_LATER.items() if k in _flat(self.settings)}, **saved}
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot resume {self.out}: its settings file {config_path.name} is missing or damaged "
                             f"({error}), so nothing can check that this run is the one saved there; start a new "
                             "run in another folder") from None
        now = _flat(self.settings)
        changed = [f"{name}: saved {_short(saved.get(name))}, now {_short(now.get(name))}"
                   for name in [*now, *(k for k in saved if k not in now)]
                   if name not in _MAY_CHANGE and saved.get(name) != now.get(name)]
        if changed:
            raise ValueError(f"cannot resume {self.out} with different settings ({'; '.join(changed)}); resume with "
                             "the run's own settings and training data (only --steps and --checkpoint-every may "
                             "change), or choose another output folder")
        state = load_training_state(state_path)
        config_path.write_text(json.dumps(self.settings, indent=2) + "\n")
        return state, self.log.truncate(state["step"])

    def checkpoint(self, step: int, parts: dict[str, Any], generators: dict[str, torch.Generator],
                   pending: list[dict[str, Any]], export: Callable[[Path], None] | None = None) -> None:
        """Append the records since the last checkpoint, save the state atomically and export the model.

        Args:
            step: steps done.
            parts, generators: as for ``start``.
            pending: the log records since the last checkpoint.
            export: writes the model the run has made so far into the folder; None exports nothing.
        """
        if self.out is None:
            return
        if distributed.is_main_process():
            self.log.append(pending)
            save_training_state(self.out / STATE_NAME, {
                "step": step, **{name: p.state_dict() if p is not None else None for name, p in parts.items()},
                "generators": {name: g.get_state() for name, g in generators.items()}})
            if export is not None:
                export(self.out)
        distributed.barrier()  # no process runs ahead of a checkpoint it might have to resume from

    def files(self) -> dict[str, Path]:
        """What the folder holds of the run, by name: the settings, the loss log and plot, and the checkpoint."""
        if self.out is None:
            return {}
        names = {"settings": TRAIN_CONFIG_NAME, "loss log": LOG_NAME, "loss plot": LOSS_PLOT_NAME,
                 "checkpoint": STATE_NAME}
        return {name: self.out / file for name, file in names.items() if (self.out / file).exists()}

    def save_figure(self, figure: Any, name: str = LOSS_PLOT_NAME) -> None:
        """Save a matplotlib figure (the loss plot) into the folder, from process 0, and close it."""
        import matplotlib.pyplot as plt  # a figure exists, so matplotlib is loaded already

        if self.out is not None and distributed.is_main_process():
            figure.savefig(self.out / name, dpi=110)
        plt.close(figure)


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level, "unet.base_channels": 64, so that a refused resume names the very field."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def append_run_record(out: Path, record: dict[str, Any], resume: bool) -> None:
    """Add one training call's record to ``run.json``; a resumed run keeps the records of its earlier calls.

    Args:
        out: the run folder.
        record: JSON-ready settings, machine and timing of this call.
        resume: whether this call continued a saved run (otherwise the file starts afresh).
    """
    path = out / RUN_RECORD_NAME
    runs: list[dict[str, Any]] = []
    if resume and path.exists():
        try:
            runs = json.loads(path.read_text())["runs"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            # The run itself is safe; only its history is lost. Keep the damaged file for whoever wants to read it.
            kept = path.replace(path.with_name(RUN_RECORD_NAME + ".damaged"))
            warnings.warn(f"{path} was damaged ({type(error).__name__}: {error}); it is kept as {kept.name} and "
                          "run.json starts again with this call's record", stacklevel=2)
    atomic_write(path, lambda f: f.write((json.dumps({"runs": [*runs, record]}, indent=2) + "\n").encode()))
