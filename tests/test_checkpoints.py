"""Saving and loading: Auto classes, trust_remote_code without retention_hf, vanilla checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from families import FAMILIES
from test_modeling import TASKS, make_model, primary_output


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request):
    return request.param


def randomise_gates(model):
    """Give the scorers non-trivial weights so that the kept tokens depend on them."""
    torch.manual_seed(123)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".gates." in name or name.startswith("encoder.gates."):
                parameter.normal_(0, 0.5)


@pytest.mark.parametrize("task", TASKS)
def test_save_and_auto_load_give_identical_outputs(family, task, tmp_path):
    model = make_model(family, task, retention_ratio=0.4, retention_first_gated_layer=0)
    randomise_gates(model)
    inputs = family.inputs([15, 9, 4], seq_len=15)
    with torch.no_grad():
        expected = model(**inputs)
    model.save_pretrained(tmp_path)
    auto_class = family.classes[task][2]
    loaded = auto_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        outputs = loaded(**inputs)
    torch.testing.assert_close(primary_output(outputs), primary_output(expected), atol=0, rtol=0)
    for got, want in zip(outputs.kept_positions, expected.kept_positions, strict=True):
        assert torch.equal(got, want)
    assert loaded.config.retention_ratio == 0.4 and loaded.config.retention_first_gated_layer == 0


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["retention_hf"] = None  # make `import retention_hf` fail: only the checkpoint's code may be used
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    path = sys.argv[1]
    expected = torch.load(f"{path}/expected.pt")
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    auto_class = getattr(transformers, expected["auto_class"])
    model = auto_class.from_pretrained(path, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    with torch.no_grad():
        outputs = model(**expected["inputs"])
    assert "retention_hf" not in type(model).__module__, type(model).__module__
    assert type(config).__name__ == expected["config_class"], type(config).__name__
    assert type(base).__name__ == expected["base_class"], type(base).__name__
    torch.testing.assert_close(getattr(outputs, expected["output"]), expected["values"], atol=1e-6, rtol=0)
    assert outputs.kept_counts.tolist() == expected["kept_counts"]
    print("REMOTE-OK", type(model).__module__)
    """
)


def test_trust_remote_code_loads_without_retention_hf(family, tmp_path, monkeypatch):
    model_class = family.classes["sequence"][0]
    monkeypatch.setattr(model_class, "_auto_class", None)
    model_class.register_for_auto_class("AutoModelForSequenceClassification")
    model = make_model(family, "sequence", retention_ratio=0.4)
    randomise_gates(model)
    inputs = family.inputs([12, 5], seq_len=12)
    with torch.no_grad():
        outputs = model(**inputs)
    model.save_pretrained(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    module = f"modeling_retention_{family.name}"
    assert config["auto_map"] == {
        "AutoConfig": f"configuration_retention.{type(model.config).__name__}",
        "AutoModel": f"{module}.{family.classes['base'][0].__name__}",
        "AutoModelForSequenceClassification": f"{module}.{model_class.__name__}",
    }
    for code_file in ("configuration_retention.py", "gates.py", "modeling_retention.py", f"{module}.py"):
        assert (tmp_path / code_file).is_file(), code_file

    assert_loads_without_retention_hf(tmp_path, inputs, outputs, type(model.config), family.classes["base"][0])


def assert_loads_without_retention_hf(
    path,
    inputs,
    outputs,
    config_class: type,
    base_class: type,
    auto_class: str = "AutoModelForSequenceClassification",
    output: str = "logits",
) -> None:
    """In a fresh process where ``import retention_hf`` fails, the checkpoint at ``path`` loads through
    ``trust_remote_code`` alone (``auto_class``; ``AutoModel`` gives ``base_class``) and reproduces
    ``outputs`` (the ``output`` field and the kept counts) on ``inputs``."""
    torch.save(
        {
            "inputs": inputs,
            "values": getattr(outputs, output),
            "output": output,
            "auto_class": auto_class,
            "kept_counts": outputs.kept_counts.tolist(),
            "config_class": config_class.__name__,
            "base_class": base_class.__name__,
        },
        path / "expected.pt",
    )
    env = {**os.environ, "HF_HOME": str(path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-OK transformers_modules" in result.stdout


def test_registered_with_auto_classes(family):
    from transformers import AutoConfig

    config = AutoConfig.for_model(f"retention-{family.name}", **family.tiny_kwargs())
    assert type(config) is family.config_class
    for _task, (model_class, _stock, auto_class) in family.classes.items():
        if _task == "qa":
            config.num_labels = 2
        assert type(auto_class.from_config(config)) is model_class


@pytest.mark.parametrize(
    ("saved_with_retention", "command_line", "expected"),
    [
        (False, {}, "decay"),  # a dense stage's settings were never used: today's default applies
        (False, {"retention_schedule": "uniform"}, "uniform"),  # the command line still wins
        (True, {}, "geometric"),  # a retention checkpoint keeps the schedule it was trained with
    ],
)
def test_recipe_start_checkpoint_settings(family, tmp_path, saved_with_retention, command_line, expected):
    from retention_hf.recipes.steps import ModelArguments, load_retention_model

    make_model(
        family, "sequence", retention_enabled=saved_with_retention, retention_schedule="geometric", num_labels=2
    ).save_pretrained(tmp_path)
    sequence_class = family.classes["sequence"][0]
    model_args = ModelArguments(model_name_or_path=str(tmp_path), retention=True, **command_line)
    model = load_retention_model(model_args, {family.config().model_type.removeprefix("retention-"): sequence_class})
    assert model.config.retention_enabled
    assert model.config.retention_schedule == expected
