"""Export a retention model to ONNX, and run the export with ONNX Runtime.

The exported graph holds the whole retention path: the scorers, each example's kept counts computed from its
attention mask at run time, the per-example top-k and the gather, and for token-level heads the restore of the
dropped positions. Batch size and sequence length stay dynamic, so tokens are removed physically in ONNX
Runtime as they are in PyTorch, and the speed-up survives export.

Why torch's ``torch.export``-based exporter (``dynamo=True``): after a gate the sequence length is a value
computed from the data. ``torch.export`` records it as an unbacked symbol, and the ONNX graph gets a ``TopK`` and
``Gather`` whose sizes come from ``ReduceMax`` of the counts at run time. The TorchScript exporter bakes Python
integers into the graph and has no stable sort. Two details make the traced forward exportable (see
``gates.is_tracing``): it never reads a count on the host, and its sorts become ``TopK``, which
ONNX defines to keep equal values in index order, like the stable sort of eager PyTorch. Attention runs eager in
the graph: transformers' SDPA path branches on the query length, which is data-dependent after a gate.

    from retention_hf.export import ORTModel, to_onnx

    to_onnx(model, "onnx/", tokenizer)               # writes model.onnx, config.json and the tokenizer
    session = ORTModel.from_pretrained("onnx/")
    outputs = session(**tokenizer(["a text"], return_tensors="np"))   # {"logits": ..., "kept_counts": ...}

A stock ``BertFor*`` / ``RobertaFor*`` model (the dense baseline) exports through the same function. The
layout (``model.onnx`` next to ``config.json`` and the tokenizer) is the one optimum's ``ORTModelFor*`` reads;
optimum-onnx itself pins transformers < 4.58 and cannot be installed next to transformers 5.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .configuration_retention import _check_ratio


# the head of a model class (by its name's suffix) -> the outputs its graph returns, besides kept_counts
TASK_OUTPUTS = {
    "ForSequenceClassification": ("logits",),
    "ForTokenClassification": ("logits",),
    "ForQuestionAnswering": ("start_logits", "end_logits"),
}
DEFAULT_OPSET = 18


def require_onnx() -> None:
    """Raise a clear ``ImportError`` when the optional ONNX packages are missing."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'retention_hf[onnx]'")


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The outputs of ``model``'s graph: its head's outputs, then ``kept_counts`` for a retention model."""
    name = type(model).__name__
    for suffix, outputs in TASK_OUTPUTS.items():
        if name.endswith(suffix):
            retention = getattr(model.config, "retention_enabled", None) is not None
            return outputs + (("kept_counts",) if retention else ())
    heads = ", ".join(f"*{suffix}" for suffix in TASK_OUTPUTS)
    raise ValueError(f"ONNX export supports the heads {heads}; got {name}")


def input_names(model: nn.Module, tokenizer=None) -> tuple[str, ...]:
    """The graph's inputs: what the tokenizer returns (else ``token_type_ids`` only when the config has more
    than one token type), among ``input_ids``, ``attention_mask`` and ``token_type_ids``."""
    if tokenizer is not None:
        given = set(tokenizer.model_input_names)
    else:
        given = {"input_ids", "attention_mask"} | (
            {"token_type_ids"} if getattr(model.config, "type_vocab_size", 1) > 1 else set()
        )
    return ("input_ids", "attention_mask") + (("token_type_ids",) if "token_type_ids" in given else ())


class _GraphModule(nn.Module):
    """The model as a function of tensors to a tuple of tensors, which is what the exporter traces."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        result = self.model(**inputs, return_dict=True)
        return tuple(getattr(result, name) for name in self.outputs)


def example_inputs(model: nn.Module, names: tuple[str, ...], length: int = 8) -> dict[str, torch.Tensor]:
    """A small padded batch to trace with: two rows, the second one half padding."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    low = min(5, config.vocab_size - 1)
    input_ids = torch.randint(low, config.vocab_size, (2, length), generator=generator)
    attention_mask = torch.ones(2, length, dtype=torch.long)
    attention_mask[1, length // 2 :] = 0
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    input_ids = input_ids.masked_fill(attention_mask == 0, pad)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}
    return {name: inputs[name] for name in names}


@contextmanager
def _export_state(model: nn.Module, retention_ratio: float | None):
    """Eval mode, eager attention and (optionally) another budget while exporting; restored afterwards."""
    config = model.config
    saved = (model.training, config._attn_implementation, getattr(config, "retention_ratio", None))
    if retention_ratio is not None:
        if saved[2] is None:
            raise ValueError(f"retention_ratio={retention_ratio} was given, but {type(model).__name__} has no budget")
        _check_ratio(retention_ratio)
        config.retention_ratio = retention_ratio
    model.eval()
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.train(saved[0])
        model.set_attn_implementation(saved[1])
        if retention_ratio is not None:
            config.retention_ratio = saved[2]


def to_onnx(
    model: nn.Module,
    output_dir: str | Path,
    tokenizer=None,
    *,
    retention_ratio: float | None = None,
    opset_version: int = DEFAULT_OPSET,
    check: bool = True,
) -> Path:
    """Export ``model`` (a retention or stock BERT/RoBERTa head) to ``output_dir/model.onnx``.

    The config (and the tokenizer, when given) are saved next to it. The graph runs at the model's budget
    (``config.retention_ratio``), or at ``retention_ratio``. With ``check`` the export is run once in ONNX
    Runtime on padded inputs of two lengths and compared with the PyTorch eval outputs; a difference
    above 1e-4, or a different kept count, raises. Returns the path of ``model.onnx``.
    """
    require_onnx()
    if getattr(model.config, "retention_merge_dropped", False):
        raise NotImplementedError(
            "retention_merge_dropped=True is not exportable to ONNX yet: export the model without it (at its "
            "accuracy without the merged slot) or serve it with PyTorch"
        )
    names, outputs = input_names(model, tokenizer), output_names(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "model.onnx"
    with _export_state(model, retention_ratio), torch.no_grad():
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        program = torch.onnx.export(
            _GraphModule(model, outputs),
            (),
            kwargs=example_inputs(model, names),
            dynamo=True,
            input_names=list(names),
            output_names=list(outputs),
            dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
            opset_version=opset_version,
            verbose=False,
        )
        program.save(path, external_data=False)
        model.config.save_pretrained(output_dir)  # inside the context: it names the exported budget
        if tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
        if check:
            session = ORTModel(path)
            for length in (7, 16):
                check_parity(model, session, example_inputs(model, names, length))
    return path


def check_parity(model: nn.Module, session: ORTModel, inputs: Mapping[str, torch.Tensor], atol: float = 1e-4) -> float:
    """The largest difference between ``session``'s outputs and ``model``'s eval outputs on ``inputs``.

    Raises ``AssertionError`` when it exceeds ``atol`` or when the kept counts differ.
    """
    with torch.no_grad():
        expected = model(**inputs, return_dict=True)
    got = session(**inputs)
    worst = 0.0
    for name, value in got.items():
        reference = getattr(expected, name).numpy()
        if name == "kept_counts":
            if not np.array_equal(value, reference):
                raise AssertionError(f"ONNX kept_counts {value.tolist()} differ from PyTorch's {reference.tolist()}")
            continue
        difference = float(np.abs(value - reference).max()) if value.size else 0.0
        if difference > atol:
            raise AssertionError(f"ONNX {name} differs from PyTorch by {difference:.2e} (> {atol:g})")
        worst = max(worst, difference)
    return worst


class ORTModel:
    """An exported model in an ``onnxruntime.InferenceSession``: call it with the tokenizer's tensors.

    Inputs may be numpy arrays or torch tensors; inputs the graph does not take are ignored (a RoBERTa graph
    has no ``token_type_ids``), and missing ``token_type_ids`` are zeros, as in PyTorch. Returns a dict of numpy arrays named as in :data:`TASK_OUTPUTS`, plus
    ``kept_counts`` ``(batch, num_layers)`` for a retention model.
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None):
        require_onnx()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> ORTModel:
        path = Path(directory) / "model.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"no model.onnx in {directory} (write one with retention-hf export)")
        return cls(path, **kwargs)

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        if "token_type_ids" in self.input_names and "token_type_ids" not in inputs and "input_ids" in inputs:
            inputs["token_type_ids"] = np.zeros_like(as_int64(inputs["input_ids"]))  # the PyTorch default
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"the ONNX graph needs {missing}; got {sorted(inputs)}")
        feed = {name: as_int64(inputs[name]) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))


def as_int64(value) -> np.ndarray:
    """A numpy int64 array of a tensor or array: what the graph's inputs are."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array.astype(np.int64, copy=False)
