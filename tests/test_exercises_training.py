"""Lesson 7's resume experiment: an exact, atomic checkpoint passes; each thing a checkpoint can miss is named."""

import os

import pytest
import torch

from tinyldm.exercises.training import check_exact_resume


def _state(model, optimizer, generator):
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state()}


def atomic_save(path, model, optimizer, generator):
    temp = path.with_suffix(".tmp")
    torch.save(_state(model, optimizer, generator), temp)
    os.replace(temp, path)


def plain_save(path, model, optimizer, generator):
    torch.save(_state(model, optimizer, generator), path)


def load(path, model, optimizer, generator):
    state = torch.load(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])


def test_an_exact_atomic_checkpoint_passes(capsys):
    check_exact_resume(atomic_save, load)
    assert capsys.readouterr().out.startswith("[ok] exact_resume: stopped at step 17")


def test_a_checkpoint_written_in_place_is_broken_by_a_crash():
    with pytest.raises(AssertionError, match="crash in the middle of the second save, load failed.*os.replace"):
        check_exact_resume(plain_save, load)


@pytest.mark.parametrize("forget, missing", [
    ("model", "the model's weights"),
    ("optimizer", "AdamW's state"),
    ("generator", "the generator's state"),
])
def test_each_forgotten_part_is_named(forget, missing):
    def partial_load(path, model, optimizer, generator):
        state = torch.load(path)
        parts = {"model": (model.load_state_dict, state["model"]),
                 "optimizer": (optimizer.load_state_dict, state["optimizer"]),
                 "generator": (generator.set_state, state["generator"])}
        for key, (restore, value) in parts.items():
            if key != forget:
                restore(value)

    with pytest.raises(AssertionError, match=f"after load, {missing}"):
        check_exact_resume(atomic_save, partial_load)


def test_a_load_that_changes_the_learning_rate_is_caught():
    def load_and_retune(path, model, optimizer, generator):
        load(path, model, optimizer, generator)
        for group in optimizer.param_groups:
            group["lr"] = 1e-3

    with pytest.raises(AssertionError, match="ends with other weights"):
        check_exact_resume(atomic_save, load_and_retune)


def test_unfinished_functions_print_todo(capsys):
    def todo(*args):
        raise NotImplementedError

    check_exact_resume(todo, load)
    check_exact_resume(atomic_save, todo)
    assert capsys.readouterr().out.count("[todo] exact_resume") == 2
