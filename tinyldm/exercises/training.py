"""Checker for lesson 7, training at full size: an experiment in exact resume.

A run that stops (a pre-empted GPU, a Ctrl-C) must be able to continue as if it never had. The checker trains a
small 2-D denoiser with AdamW, stops it, lets the student's ``save`` write a checkpoint, simulates a crash in the
middle of a second save, rebuilds everything from other seeds, lets the student's ``load`` restore it, and
compares the resumed run's final weights with an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from tinyldm.data.toy import toy_2d
from tinyldm.diffusion import diffusion_loss
from tinyldm.exercises.checking import not_attempted, passed
from tinyldm.mlp import MLPConfig, MLPDenoiser
from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule

__all__ = ["RESUME_STEPS", "STOP_AT", "ResumeParts", "check_exact_resume"]

RESUME_STEPS = 40  # the whole run
STOP_AT = 17  # where the run stops and the checkpoint is written
BATCH = 64


class ResumeParts:
    """Everything a step of the toy run depends on: the model, its optimiser, the generator that draws batches,
    steps t and noise, the data and the schedule. Built from ``seed`` (a resumed run starts from other seeds, so
    whatever ``load`` fails to restore shows)."""

    def __init__(self, seed: int):
        with seeded(seed):
            self.model = MLPDenoiser(MLPConfig.tiny())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2, weight_decay=0.01)
        self.generator = torch.Generator().manual_seed(seed)
        self.data = toy_2d(1024, "moons", seed=0)
        self.schedule = NoiseSchedule.linear(100)

    def train(self, steps: int) -> None:
        for _ in range(steps):
            batch = self.data[torch.randint(len(self.data), (BATCH,), generator=self.generator)]
            loss = diffusion_loss(self.model, batch, self.schedule, self.generator)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    def weights(self) -> list[Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]

    def optimizer_tensors(self) -> list[Tensor]:
        state = self.optimizer.state_dict()["state"]
        return [v.clone() for k in sorted(state) for v in state[k].values() if isinstance(v, Tensor)]


def _equal(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def _crash_during_torch_save(save: Callable[..., Any], path: Path, parts: ResumeParts) -> None:
    """Call ``save`` with ``torch.save`` writing half of its bytes and then failing, as a killed process would."""
    real_save = torch.save

    def half_then_crash(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if hasattr(f, "write"):
            f.write(data)
        else:
            Path(f).write_bytes(data)
        raise KeyboardInterrupt("the process was killed in the middle of torch.save")

    torch.save = half_then_crash
    try:
        save(path, parts.model, parts.optimizer, parts.generator)
    except KeyboardInterrupt:
        pass
    finally:
        torch.save = real_save


def check_exact_resume(save: Callable[..., Any], load: Callable[..., Any]) -> None:
    """Experiment: ``save(path, model, optimizer, generator)`` writes a checkpoint to ``path`` with ``torch.save``;
    ``load(path, model, optimizer, generator)`` restores freshly built ones from it. The run stopped at STOP_AT,
    saved, crashed in a later save and resumed must end with the uninterrupted run's weights, bit for bit."""
    name = "exact_resume"
    whole = ResumeParts(seed=0)
    whole.train(RESUME_STEPS)

    stopped = ResumeParts(seed=0)
    stopped.train(STOP_AT)
    at_stop = (stopped.weights(), stopped.optimizer_tensors(), stopped.generator.get_state())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        try:
            save(path, stopped.model, stopped.optimizer, stopped.generator)
        except NotImplementedError:
            return not_attempted(name)
        if not path.is_file():
            raise AssertionError(f"{name}: save wrote nothing at the path it was given ({path.name}). Hint: "
                                 "torch.save(a_dict_of_states, path)")
        stopped.train(3)  # the run goes on, and is killed while it writes its next checkpoint
        _crash_during_torch_save(save, path, stopped)

        resumed = ResumeParts(seed=1)  # other weights, no optimiser state, another generator
        try:
            load(path, resumed.model, resumed.optimizer, resumed.generator)
        except NotImplementedError:
            return not_attempted(name)
        except Exception as err:  # noqa: BLE001 - any failure to read the file is the finding
            raise AssertionError(
                f"{name}: after a crash in the middle of the second save, load failed ({type(err).__name__}: "
                f"{err}). Hint: write the checkpoint to a temporary file in the same folder and os.replace it over "
                "the old one, so a crash leaves the old checkpoint whole") from None
        missing = [what for what, ok in (
            ("the model's weights", _equal(resumed.weights(), at_stop[0])),
            ("AdamW's state (its step count and the moments exp_avg and exp_avg_sq)",
             _equal(resumed.optimizer_tensors(), at_stop[1])),
            ("the generator's state (the batches, steps t and noise still to be drawn)",
             torch.equal(resumed.generator.get_state(), at_stop[2])),
        ) if not ok]
        if missing:
            raise AssertionError(f"{name}: after load, {missing[0]} differ from those at step {STOP_AT}, where the "
                                 "checkpoint was written. Hint: save and restore every object a step reads: "
                                 "state_dict() / load_state_dict() for the model and the optimiser, get_state() / "
                                 "set_state() for the generator")
    resumed.train(RESUME_STEPS - STOP_AT)
    if not _equal(resumed.weights(), whole.weights()):
        raise AssertionError(f"{name}: the state at step {STOP_AT} was restored, yet the resumed run ends with other "
                             "weights than the uninterrupted one. Hint: does load change anything else, such as the "
                             "optimiser's learning rate?")
    return passed(name, f"stopped at step {STOP_AT}, killed in a later save, resumed: after {RESUME_STEPS} steps "
                        "the weights equal the uninterrupted run's bit for bit")
