"""``retention-hf``: the command line. Every subcommand is a thin wrapper over the library.

    retention-hf train ...        fine-tune for a task: --task classification (default), question-answering,
                                  token-classification or summarization (retention_hf.recipes.<task>)
    retention-hf evaluate ...     evaluate a checkpoint with its task's recipe, without training
    retention-hf benchmark ...    speed / memory / accuracy harness (retention_hf.benchmarks.run)
    retention-hf convert SRC DST  a vanilla BERT/RoBERTa checkpoint as a retention checkpoint with a budget
    retention-hf export CKPT DST  ONNX export (model.onnx, config, tokenizer) for ONNX Runtime
    retention-hf card CKPT        (re)write a checkpoint's model card
    retention-hf push CKPT REPO   upload a checkpoint with its card to the Hub (or any HF_ENDPOINT)
    retention-hf summarize CKPT F the sentences of a document a sentence-scoring model picks
    retention-hf visualize CKPT   which tokens survive each layer, as HTML and a PNG heat map

Errors print one line, ``retention-hf: error: ...``, and exit with status 2 (no traceback); ``--debug``
before the subcommand shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock


# Families and heads the converter knows: stock model_type -> retention classes by head.
_HEADS = {
    "base": "Model",
    "sequence-classification": "ForSequenceClassification",
    "question-answering": "ForQuestionAnswering",
    "token-classification": "ForTokenClassification",
    "sentence-scoring": "ForSentenceScoring",
}
_FAMILIES = {"bert": "RetentionBert", "roberta": "RetentionRoberta"}


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``retention-hf convert: error: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@contextmanager
def _one_line_usage_errors(command: str):
    """train / evaluate / benchmark hand their arguments to parsers the recipes build (HfArgumentParser,
    the benchmark's argparse); while they run, those parsers report usage errors in one line too."""

    def error(parser: argparse.ArgumentParser, message: str):
        parser.exit(2, f"retention-hf {command}: error: {message} (see retention-hf {command} --help)\n")

    with mock.patch.object(argparse.ArgumentParser, "error", error):
        yield


def _checkpoint(path: str) -> str:
    """``path`` if it is a checkpoint directory, else a clear error."""
    if not Path(path, "config.json").is_file():
        raise CommandError(f"checkpoint not found: {path} (no config.json)")
    return path


def _budget(value: str) -> float:
    try:
        budget = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < budget <= 1.0:
        raise argparse.ArgumentTypeError(f"budget must be in (0, 1], got {budget}")
    return budget


def _head_of(config) -> str:
    """The head named by a checkpoint's ``architectures`` (``BertForQuestionAnswering`` -> question-answering)."""
    for architecture in config.architectures or []:
        for head, suffix in _HEADS.items():
            if head != "base" and architecture.endswith(suffix):
                return head
    return "base"


def _retention_class(model_type: str, head: str) -> type:
    import retention_hf

    family = _FAMILIES.get(model_type.removeprefix("retention-"))
    if family is None:
        raise CommandError(f"unsupported model_type {model_type!r}: retention_hf converts BERT and RoBERTa checkpoints")
    return getattr(retention_hf, family + _HEADS[head])


def _load(path: str, budget: float | None = None):
    """A retention checkpoint (or a vanilla one, converted on load) in the class of its head, and its
    tokenizer (``None`` if the checkpoint has none)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(_checkpoint(path))
    model_class = _retention_class(config.model_type, _head_of(config))
    overrides = {} if budget is None else {"retention_ratio": budget}
    model = model_class.from_pretrained(path, **overrides)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


# ------------------------------------------------------------------------------------------- commands
# --task -> the recipe module under retention_hf.recipes
TASKS = {
    "classification": "classification",
    "question-answering": "question_answering",
    "token-classification": "token_classification",
    "summarization": "summarization",
}


def _pop_task(argv: list[str]) -> tuple[str, list[str]]:
    """The ``--task`` value (default ``classification``) and the other arguments, for the recipe."""
    task, rest, index = "classification", [], 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--task":
            if index + 1 == len(argv):
                raise CommandError(f"--task needs a value: one of {sorted(TASKS)}")
            task, index = argv[index + 1], index + 2
            continue
        if argument.startswith("--task="):
            task = argument.split("=", 1)[1]
        else:
            rest.append(argument)
        index += 1
    if task not in TASKS:
        raise CommandError(f"unknown --task {task!r}: use one of {sorted(TASKS)}")
    return task, rest


def _recipe(argv: list[str], evaluate_only: bool) -> None:
    import importlib

    task, argv = _pop_task(argv)
    recipe = importlib.import_module(f".recipes.{TASKS[task]}", __package__)
    if evaluate_only:
        argv = [*argv, "--do_train", "false", "--do_eval", "true"]
    print(json.dumps(recipe.main(argv), indent=2, default=str))


def cmd_train(args: argparse.Namespace) -> None:
    _recipe(args.passthrough, evaluate_only=False)


def cmd_evaluate(args: argparse.Namespace) -> None:
    if "--help" not in args.passthrough and "-h" not in args.passthrough:
        checkpoint = argparse.ArgumentParser(add_help=False)
        checkpoint.add_argument("--model_name_or_path")
        path = checkpoint.parse_known_args(args.passthrough)[0].model_name_or_path
        if path is None:
            raise CommandError("evaluate needs --model_name_or_path <checkpoint>")
        _checkpoint(path)
    _recipe(args.passthrough, evaluate_only=True)


def cmd_benchmark(args: argparse.Namespace) -> None:
    from .benchmarks.run import main as run_benchmarks

    results = run_benchmarks(args.passthrough, prog="retention-hf benchmark")
    print(json.dumps(results["targets"], indent=2))


def cmd_convert(args: argparse.Namespace) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(_checkpoint(args.source))
    if config.model_type.startswith("retention-"):
        raise CommandError(f"{args.source} is already a retention checkpoint ({config.model_type})")
    head = args.head or _head_of(config)
    model_class = _retention_class(config.model_type, head)
    model = model_class.from_pretrained(args.source, retention_ratio=args.budget)
    if args.remote_code:
        with model.remote_code_files():
            model.save_pretrained(args.output)
    else:
        model.save_pretrained(args.output)
    try:
        AutoTokenizer.from_pretrained(args.source).save_pretrained(args.output)
    except (OSError, ValueError):
        print(f"note: {args.source} has no tokenizer; none was copied", file=sys.stderr)
    print(f"{args.output}: {model_class.__name__} at budget {args.budget}")


def cmd_export(args: argparse.Namespace) -> None:
    import time

    from .export import to_onnx

    start = time.perf_counter()
    model, tokenizer = _load(args.checkpoint)
    if args.dense:
        model.config.retention_enabled = False
    try:
        path = to_onnx(
            model,
            args.output,
            tokenizer,
            retention_ratio=args.budget,
            opset_version=args.opset,
            check=not args.no_check,
        )
    except ImportError as error:
        raise CommandError(str(error)) from None
    checked = "" if args.no_check else ", outputs checked against PyTorch in ONNX Runtime"
    print(f"{path} ({time.perf_counter() - start:.0f} s{checked})")


def cmd_card(args: argparse.Namespace) -> None:
    from .model_card import card_data_from_checkpoint, write_model_card

    model, _ = _load(args.checkpoint)
    card_data = card_data_from_checkpoint(
        args.checkpoint,
        model_name=args.model_name,
        base_model=args.base_model,
        datasets=args.dataset,
        speedup=args.speedup,
        speedup_setup=args.speedup_setup,
        license=args.license,
    )
    write_model_card(model, args.output or args.checkpoint, card_data)
    print(Path(args.output or args.checkpoint, "README.md"))


def cmd_push(args: argparse.Namespace) -> None:
    from .model_card import card_data_from_checkpoint

    model, tokenizer = _load(args.checkpoint)
    model.model_card_data = card_data_from_checkpoint(args.checkpoint, model_name=args.repo_id)
    commit = model.push_to_hub(args.repo_id, processing_class=tokenizer, private=args.private, token=args.token)
    print(commit.commit_url if hasattr(commit, "commit_url") else commit)


def cmd_summarize(args: argparse.Namespace) -> None:
    from .summarization import summarize

    model, tokenizer = _load(args.checkpoint, args.budget)
    if not hasattr(model, "sentence_scorer"):
        raise CommandError(f"{args.checkpoint} is a {type(model).__name__}, not a sentence-scoring model")
    if tokenizer is None:
        raise CommandError(f"{args.checkpoint} has no tokenizer")
    path = Path(args.document)
    if not path.is_file():
        raise CommandError(f"document not found: {path}")
    print("\n".join(summarize(model, tokenizer, path.read_text(encoding="utf-8"), k=args.k)))


def cmd_visualize(args: argparse.Namespace) -> None:
    from .visualization import plot_budget_curve, plot_heatmap, plot_layer_retention, save_html, trace_retention

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    if args.checkpoint is not None:
        if args.text is None:
            raise CommandError("visualize CHECKPOINT needs --text (and optionally --text_pair)")
        model, tokenizer = _load(args.checkpoint, args.budget)
        if tokenizer is None:
            raise CommandError(f"{args.checkpoint} has no tokenizer to encode --text with")
        trace = trace_retention(model, tokenizer, args.text, args.text_pair, args.max_length)
        written += [save_html(trace, output / "retention.html"), plot_heatmap(trace, output / "retention.png")]
    if args.run is not None:
        written.append(plot_layer_retention(args.run, output / "layer_retention.png"))
    if args.runs:
        written.append(plot_budget_curve(args.runs, output / "budget_curve.png", args.metric))
    if not written:
        raise CommandError("nothing to draw: give a CHECKPOINT with --text, --run or --runs")
    print("\n".join(str(path) for path in written))


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="retention-hf",
        description="Adaptive Retention for Hugging Face Transformers: train, evaluate, benchmark, convert, "
        "document and inspect retention models.",
    )
    parser.add_argument("--debug", action="store_true", help="Show tracebacks instead of one-line errors.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable, help: str, **kwargs) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help, description=help, **kwargs)
        command.set_defaults(handler=handler)
        return command

    recipe_help = (
        "--task picks the recipe: classification (the default; your own files with --train_file / "
        "--validation_file), question-answering, token-classification or summarization. Every other argument "
        "goes to that recipe (retention_hf.recipes.<task>): ModelArguments, its data arguments and "
        "RetentionTrainingArguments; `retention-hf {name} --task <task> --help` lists them."
    )
    for name, handler, help in (
        ("train", cmd_train, "Fine-tune a dense or retention model for a task and evaluate it."),
        (
            "evaluate",
            cmd_evaluate,
            "Evaluate a checkpoint (--model_name_or_path) with its task's recipe, no training; add --retention "
            "false for a dense checkpoint.",
        ),
    ):
        add(name, handler, help, add_help=False, epilog=recipe_help.format(name=name)).set_defaults(passthrough=True)
    add(
        "benchmark",
        cmd_benchmark,
        "Speed, memory and accuracy of dense vs retention checkpoints in one run (`benchmark --help` lists them).",
        add_help=False,
    ).set_defaults(passthrough=True)

    command = add("convert", cmd_convert, "Turn a vanilla BERT/RoBERTa checkpoint into a retention checkpoint.")
    command.add_argument("source", help="A vanilla BERT or RoBERTa checkpoint directory.")
    command.add_argument("output", help="Where to write the retention checkpoint.")
    command.add_argument("--budget", type=_budget, required=True, help="Budget rho in (0, 1].")
    command.add_argument("--head", choices=sorted(_HEADS), help="Head class (default: from the architectures).")
    command.add_argument(
        "--remote_code", action="store_true", help="Also write auto_map and code files for trust_remote_code=True."
    )

    command = add("export", cmd_export, "Export a checkpoint to ONNX (model.onnx, config, tokenizer) for ONNX Runtime.")
    command.add_argument(
        "checkpoint",
        help="A retention (or vanilla BERT/RoBERTa) classification, QA or token-classification checkpoint.",
    )
    command.add_argument("output", help="Directory for model.onnx, config.json and the tokenizer.")
    command.add_argument("--budget", type=_budget, help="Export at this budget instead of the checkpoint's.")
    command.add_argument("--dense", action="store_true", help="Export with retention off (the dense baseline).")
    command.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18).")
    command.add_argument("--no_check", action="store_true", help="Skip the ONNX Runtime vs PyTorch check.")

    command = add("card", cmd_card, "Write a checkpoint's model card (README.md) from its config and results.")
    command.add_argument("checkpoint", help="A retention checkpoint directory (a training output_dir).")
    command.add_argument("--output", help="Directory for README.md (default: the checkpoint).")
    command.add_argument("--model_name", help="Name on the card, e.g. the Hub repo id.")
    command.add_argument("--base_model", help="Hub id of the model it was fine-tuned from.")
    command.add_argument("--dataset", action="append", help="Training dataset (repeatable).")
    command.add_argument("--speedup", type=float, help="Measured speed-up over dense (default: eval_results.json).")
    command.add_argument("--speedup_setup", help="How the speed-up was measured.")
    command.add_argument("--license", help="License id, e.g. apache-2.0.")

    command = add("push", cmd_push, "Upload a checkpoint (weights, config, code, tokenizer, card) to the Hub.")
    command.add_argument("checkpoint", help="A retention checkpoint directory.")
    command.add_argument("repo_id", help="Hub repository, e.g. you/minilm-sst2-retention (HF_ENDPOINT picks the Hub).")
    command.add_argument(
        "--private", action="store_true", default=None, help="Create the repository as private (if it is new)."
    )
    command.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login).")

    command = add("summarize", cmd_summarize, "Pick the k sentences of a document a sentence-scoring model ranks best.")
    command.add_argument(
        "checkpoint", help="A retention sentence-scoring checkpoint (retention-hf train --task summarization)."
    )
    command.add_argument("document", help="A text file with one sentence per line.")
    command.add_argument("--k", type=int, default=3, help="How many sentences to return (default 3).")
    command.add_argument("--budget", type=_budget, help="Run at this budget instead of the checkpoint's.")

    command = add("visualize", cmd_visualize, "Draw which tokens survive each layer, and a run's budget curves.")
    command.add_argument("checkpoint", nargs="?", help="A retention checkpoint, to trace --text through.")
    command.add_argument("--text", help="The input text.")
    command.add_argument("--text_pair", help="A second segment (e.g. the question for QA models).")
    command.add_argument("--budget", type=_budget, help="Trace at this budget instead of the checkpoint's.")
    command.add_argument("--max_length", type=int, default=512, help="Truncate the input to this many tokens.")
    command.add_argument("--run", help="A training output_dir: plot its per-layer keep ratios.")
    command.add_argument("--runs", nargs="+", help="Training output_dirs: plot quality against keep ratio.")
    command.add_argument("--metric", default="eval_accuracy", help="Quality metric for --runs.")
    command.add_argument("--output", default=".", help="Directory for the HTML and PNG files.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):  # train / evaluate / benchmark parse their own arguments
        args.passthrough = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with _one_line_usage_errors(args.command) if getattr(args, "passthrough", None) is not None else nullcontext():
            args.handler(args)
    except (CommandError, ValueError, TypeError, KeyError, OSError) as error:
        if args.debug:
            raise
        message = str(error.args[0] if isinstance(error, KeyError) and error.args else error).replace("\n", " ")
        print(f"retention-hf {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
