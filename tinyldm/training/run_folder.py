"""A training run's folder: its settings, its loss log, and the checks that make ``--resume`` safe.

Every training loop of the course (``tinyldm.training.diffusion_loop``, ``tinyldm.training.autoencoder_loop``) writes the same layout:
``train_config.json`` (the settings the run started with), ``loss.jsonl`` (one JSON record per step) and
``train_state.pt`` (``tinyldm.training.checkpoint``). Resuming checks the settings against the saved ones and cuts the log
back to the last checkpoint, so an interrupted run continues as if it had never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyldm.training import distributed
from tinyldm.training.checkpoint import STATE_NAME, load_training_state

__all__ = ["LOG_NAME", "TRAIN_CONFIG_NAME", "RUN_RECORD_NAME", "LossLog", "open_run_folder", "append_run_record"]

LOG_NAME = "loss.jsonl"
TRAIN_CONFIG_NAME = "train_config.json"
RUN_RECORD_NAME = "run.json"  # what each call of a training job did: settings, machine, timing


class LossLog:
    """A JSON-lines log, one ``{"step": ..., "loss": ..., ...}`` record per step, that can be cut back on resume.

    Args:
        path: the log file; created on the first write.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far, in order."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Drop the records after ``step`` (those of an interrupted run past its last checkpoint); returns the rest."""
        kept = [r for r in self.records() if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add records at the end of the file."""
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


def open_run_folder(out: Path, settings: dict[str, Any], resume: bool,
                    log: LossLog) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Start a fresh run in ``out``, or check and load the run saved there; shared by the training loops.

    A fresh run needs a folder without a saved state; it writes ``settings`` to ``train_config.json`` and empties
    the log. A resumed run needs a saved state and the same settings as before (only "steps" may change, to
    extend a run); the log loses the records written after the saved step (an interrupted run's last steps).
    In a data-parallel run process 0 checks and prepares the folder, then the others read the same saved state
    (the run folder must be on a file system every process sees).

    Args:
        out: the run folder.
        settings: the run's settings as a JSON-ready dict, e.g. ``config_to_dict(config)``.
        resume: continue the saved run instead of starting one.
        log: the run's loss log.
    Returns:
        (the saved training state, or None for a fresh run; the log records kept).
    """
    if distributed.is_main_process():
        prepared = _open_run_folder(out, settings, resume, log)
    distributed.barrier()
    if distributed.is_main_process():
        return prepared
    return (load_training_state(out / STATE_NAME) if resume else None), log.records()


def _open_run_folder(out: Path, settings: dict[str, Any], resume: bool,
                     log: LossLog) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    state_path = out / STATE_NAME
    config_path = out / TRAIN_CONFIG_NAME
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as the saved file has them
    if not resume:
        if state_path.exists():
            saved = load_training_state(state_path)["step"]
            raise FileExistsError(f"{out} already holds a run (saved at step {saved}); pass resume=True "
                                  "(--resume) to continue it, or choose another output folder")
        out.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(settings, indent=2) + "\n")
        log.path.write_text("")
        return None, []
    if not state_path.exists():
        raise FileNotFoundError(f"nothing to resume in {out}: no {STATE_NAME} there; drop resume (--resume) to "
                                "start a new run")
    saved_settings = json.loads(config_path.read_text())
    changed = [f"{name}: saved {saved_settings.get(name)!r}, now {settings.get(name)!r}"
               for name in [*settings, *(k for k in saved_settings if k not in settings)]
               if name != "steps" and saved_settings.get(name) != settings.get(name)]
    if changed:
        raise ValueError(f"cannot resume {out} with different settings ({'; '.join(changed)}); only steps may "
                         "change on resume")
    state = load_training_state(state_path)
    config_path.write_text(json.dumps(settings, indent=2) + "\n")
    return state, log.truncate(state["step"])


def append_run_record(out: Path, record: dict[str, Any], resume: bool) -> None:
    """Add one training call's record to ``run.json``; a resumed run keeps the records of its earlier calls.

    Args:
        out: the run folder.
        record: JSON-ready settings, machine and timing of this call.
        resume: whether this call continued a saved run (otherwise the file starts afresh).
    """
    path = out / RUN_RECORD_NAME
    runs = json.loads(path.read_text())["runs"] if resume and path.exists() else []
    path.write_text(json.dumps({"runs": [*runs, record]}, indent=2) + "\n")
