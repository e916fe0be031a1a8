"""Loading a checkpoint for the benchmarks and switching it between the configurations they compare.

Shared by the harness (``run.py``), the memory probe (``memory.py``) and the profiler (``profile.py``), so
that none of them imports another.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification, AutoTokenizer

import retention_hf


def load_retention_model(path: str, **overrides) -> torch.nn.Module:
    """A retention sequence classifier in eval mode; a checkpoint of another kind is a ``TypeError``."""
    model = AutoModelForSequenceClassification.from_pretrained(path, **overrides).eval()
    if not isinstance(model.config, retention_hf.RetentionConfig):
        raise TypeError(f"{path} is not a retention checkpoint ({type(model).__name__})")
    return model


def load_at_budget(path: str, ratio: float) -> torch.nn.Module:
    """``load_retention_model`` with ``ratio`` as its budget (an explicit schedule rescaled to it)."""
    model = load_retention_model(path)
    model.config.set_retention_budget(ratio)
    return model


def set_configuration(model: torch.nn.Module, configuration: str) -> None:
    """``dense`` (retention off) or ``rho=<ratio>`` (retention at that budget, an explicit schedule rescaled to it
    as ``load_at_budget`` does)."""
    if configuration == "dense":
        model.config.retention_enabled = False
        return
    model.config.retention_enabled = True
    model.config.set_retention_budget(float(configuration.split("=", 1)[1]))


def save_untrained_twin(config_file: str, output: str, base: str) -> None:
    """Write to ``output`` the checkpoint ``config_file`` describes (a trained model's ``config.json``) built on
    ``base``'s encoder weights, with fresh gates and head, and ``base``'s tokenizer.

    The speed of top-k retention depends only on the shapes (each layer's kept counts follow from the attention
    mask and the budget), so this twin runs exactly as fast as the trained model that config came from: the ONNX
    speed table can be reproduced without its fine-tunes. Its predictions mean nothing."""
    model_type = json.loads(Path(config_file).read_text())["model_type"]
    config = CONFIG_MAPPING[model_type].from_json_file(config_file)  # retention-bert or retention-roberta
    model_class = getattr(retention_hf, config.architectures[0])
    model_class.from_pretrained(base, config=config).save_pretrained(output)
    AutoTokenizer.from_pretrained(base).save_pretrained(output)
