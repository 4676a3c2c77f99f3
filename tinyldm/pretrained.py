"""Saving and loading trained models the Hugging Face way: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` holds the model's ``@dataclass`` config (plus the class name), so the folder alone rebuilds the
network; ``model.safetensors`` holds the weights in a format that, unlike a pickle, cannot run code when loaded.
Loading checks both against the class that loads them and says what did not match. Diffusion models also write
``schedule.json``: the noise schedule they were trained with and what they predict, which a sampler needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from tinyldm.runtime import atomic_write
from tinyldm.schedule import NoiseSchedule

__all__ = ["PretrainedMixin", "config_to_dict", "config_from_dict", "read_json_file", "save_schedule", "load_schedule",
           "checkpoint_dir", "measurement_file", "CONFIG_NAME", "WEIGHTS_NAME", "SCHEDULE_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SCHEDULE_NAME = "schedule.json"
CHECKPOINTS_VAR = "TINYLDM_CHECKPOINTS"

M = TypeVar("M", bound="PretrainedMixin")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass config instance, got {type(config).__name__}")
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
            for f in dataclasses.fields(config)}


def config_from_dict(config_class: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build ``config_class`` from a dict, naming any field that is unknown or missing.

    Lists become tuples, the way configs store sequences.
    """
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    missing = sorted(names - set(values))
    if unknown or missing:
        parts = ([f"unknown fields {unknown}"] if unknown else []) + ([f"missing fields {missing}"] if missing else [])
        raise ValueError(f"{source} does not match {config_class.__name__}: {'; '.join(parts)}. It was probably "
                         f"written by another version of tinyldm or for another model; retrain or edit the file")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _how_to_restore(path: Path) -> str:
    """How to get a good copy of a damaged file in a model folder: git for a shipped model, else retrain."""
    parts = path.resolve().parts
    for i in range(len(parts) - 3):
        if parts[i:i + 2] == ("data", "checkpoints"):  # a shipped model: data/checkpoints/NAME/...
            return (f"it belongs to the shipped model {parts[i + 2]}: restore its folder with "
                    f"git checkout -- data/checkpoints/{parts[i + 2]} (from the repository's root)")
    return (f"restore {path.parent} from a good copy, or train the model again; a file cut short while it was "
            "written or copied cannot be repaired")


def read_json_file(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path`` (a config.json or schedule.json); a damaged file is named, with how to replace it.

    Raises:
        ValueError: the file is not UTF-8 JSON, or holds something other than an object.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged: it is not valid JSON ({error}); {_how_to_restore(path)}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} is damaged: it holds a JSON {type(values).__name__}, not an object of settings; "
                         f"{_how_to_restore(path)}")
    return values


def _check_folder(directory: Path, names: tuple[str, ...]) -> None:
    if not directory.is_dir():
        raise FileNotFoundError(f"no model folder at {directory}; pass the folder that save_pretrained wrote "
                                f"(it holds {', '.join(names)})")
    absent = [n for n in names if not (directory / n).is_file()]
    if absent:
        raise FileNotFoundError(f"{directory} has no {', '.join(absent)}; a model folder holds "
                                f"{', '.join(names)} (written by save_pretrained)")


class PretrainedMixin:
    """Adds ``save_pretrained(dir)`` and ``from_pretrained(dir)`` to an ``nn.Module`` with a dataclass config.

    The class sets ``config_class`` and keeps its config in ``self.config``; its constructor takes that config.
    """

    config_class: type
    config: Any

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed), atomically.

        Returns:
            The folder written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **config_to_dict(self.config)}
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / CONFIG_NAME, lambda f: f.write(json.dumps(config, indent=2).encode() + b"\n"))
        atomic_write(directory / WEIGHTS_NAME,
                     lambda f: f.write(_safetensors_bytes(tensors, type(self).__name__)))
        return directory

    @classmethod
    def from_pretrained(cls: type[M], directory: str | os.PathLike, config: Any = None) -> M:
        """Rebuild the model from a folder written by ``save_pretrained``; the weights land on the CPU.

        Args:
            directory: the folder holding config.json and model.safetensors.
            config: optional expected config; loading fails, listing the differing fields, if the saved one differs.
        Returns:
            The model in eval mode.
        """
        directory = Path(directory)
        _check_folder(directory, (CONFIG_NAME, WEIGHTS_NAME))
        values = read_json_file(directory / CONFIG_NAME)
        saved_class = values.pop("_class_name", None)
        if saved_class != cls.__name__:
            raise ValueError(f"{directory / CONFIG_NAME} describes a {saved_class}, not a {cls.__name__}: give the "
                             f"folder of a {cls.__name__} (in Python, load this one with "
                             f"{saved_class}.from_pretrained)")
        saved = config_from_dict(cls.config_class, values, source=str(directory / CONFIG_NAME))
        if config is not None:
            diff = [f"{f.name}: saved {getattr(saved, f.name)!r}, expected {getattr(config, f.name)!r}"
                    for f in dataclasses.fields(saved) if getattr(saved, f.name) != getattr(config, f.name)]
            if diff:
                raise ValueError(f"the config in {directory} differs from the one expected: " + "; ".join(diff))
        model = cls(saved)
        try:
            state = load_file(directory / WEIGHTS_NAME, device="cpu")
        except SafetensorError as error:  # a file cut short, or not safetensors at all
            raise ValueError(f"{directory / WEIGHTS_NAME} is damaged: it cannot be read as safetensors ({error}); "
                             f"{_how_to_restore(directory / WEIGHTS_NAME)}") from None
        expected = model.state_dict()
        problems = []
        if missing := sorted(set(expected) - set(state)):
            problems.append(f"missing tensors {missing[:5]}")
        if unexpected := sorted(set(state) - set(expected)):
            problems.append(f"unexpected tensors {unexpected[:5]}")
        if wrong := [f"{k}: saved {tuple(state[k].shape)}, model {tuple(v.shape)}"
                     for k, v in expected.items() if k in state and state[k].shape != v.shape]:
            problems.append("shape mismatches " + "; ".join(wrong[:5]))
        if problems:
            raise ValueError(f"{directory / WEIGHTS_NAME} does not fit a {cls.__name__} built from its config.json: "
                             + "; ".join(problems) + ". The two files come from different models; save them together")
        model.load_state_dict(state)
        return model.eval()


def _safetensors_bytes(tensors: dict[str, torch.Tensor], class_name: str) -> bytes:
    return save(tensors, metadata={"format": "pt", "class": class_name})


def save_schedule(directory: str | os.PathLike, schedule: NoiseSchedule, prediction: str = "eps",
                  image_size: int | None = None) -> Path:
    """Write ``schedule.json``: the noise schedule, the model's target and the image size it was trained at."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"schedule": schedule.config, "prediction": prediction, "image_size": image_size}
    atomic_write(directory / SCHEDULE_NAME, lambda f: f.write(json.dumps(payload, indent=2).encode() + b"\n"))
    return directory / SCHEDULE_NAME


def load_schedule(directory: str | os.PathLike) -> tuple[NoiseSchedule, str, int | None]:
    """Read ``schedule.json``: returns (schedule, prediction, image_size)."""
    directory = Path(directory)
    _check_folder(directory, (SCHEDULE_NAME,))
    path = directory / SCHEDULE_NAME
    payload = read_json_file(path)
    try:
        schedule = NoiseSchedule.from_config(payload["schedule"])
        prediction = payload["prediction"]
    except (KeyError, TypeError, ValueError) as error:  # a key missing, or a schedule that cannot be built
        raise ValueError(f"{path} holds no usable schedule ({type(error).__name__}: {error}); "
                         f"{_how_to_restore(path)}") from error
    return schedule, prediction, payload.get("image_size")


def _data_roots(kind: str) -> list[Path]:
    """Where the repository's ``data/<kind>`` folder may be: next to the package, or from the working folder
    (``data/<kind>``, or ``../data/<kind>`` when a notebook runs in notebooks/)."""
    return [Path(__file__).resolve().parents[1] / "data" / kind, Path("data") / kind, Path("..") / "data" / kind]


def checkpoint_dir(name: str) -> Path:
    """The folder of a shipped checkpoint, e.g. ``checkpoint_dir("pixel-shapes")``.

    Looks in ``$TINYLDM_CHECKPOINTS``, then in the repository's ``data/checkpoints`` (next to the package), then
    in ``data/checkpoints`` and ``../data/checkpoints`` from the working folder (a notebook runs in notebooks/).
    """
    roots = [Path(os.environ[CHECKPOINTS_VAR])] if os.environ.get(CHECKPOINTS_VAR) else []
    roots += _data_roots("checkpoints")
    for root in roots:
        if (root / name / CONFIG_NAME).is_file():
            return root / name
    raise FileNotFoundError(f"no shipped checkpoint {name!r} in {[str(r) for r in roots]}; set {CHECKPOINTS_VAR} "
                            "to the folder that holds it, or train one with the tinyldm command")


def measurement_file(name: str) -> Path:
    """A recorded measurement that a lesson reads, e.g. ``measurement_file("pixel_vs_latent_quality.json")``: the
    output of a script in ``benchmarks/``, kept in the repository's ``data/measurements`` (found from the package,
    or from the working folder as ``data/measurements`` or ``../data/measurements``)."""
    roots = _data_roots("measurements")
    for root in roots:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no recorded measurement {name!r} in {[str(r) for r in roots]}; the script in "
                            "benchmarks/ that writes it says how to make it again")
