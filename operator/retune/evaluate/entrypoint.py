"""``retune-evaluate``: the entrypoint of evaluation pods.

It reads a batch (``--batch``, else ``$RETUNE_BATCH``, else
``/etc/retune/batch/batch.json``), runs every task through the same harness as the local
executor, and writes the outcomes as compact JSON to the termination message
(``--output``, else ``/dev/termination-log``) and to stdout. Kubernetes keeps at most
4 KiB of a termination message, so :func:`encode_outcomes` shrinks the document in a fixed
order until it fits; :func:`decode_outcomes` is the operator's side.

Absolute paths (the batch, a file evaluator, the output) are prefixed with
``$RETUNE_PATH_PREFIX`` when it is set, so a test node agent can remap mounted volumes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from retune.evaluate.confine import isolate_process_network
from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)
from retune.evaluate.loader import load_evaluator
from retune.evaluate.sandbox import SandboxHarness

DEFAULT_BATCH = "/etc/retune/batch/batch.json"
DEFAULT_OUTPUT = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
FORMAT_VERSION = 1

# Each step shrinks every outcome further: (significant digits, feedback chars, detail
# chars, keep metrics, keep subscores). Feedback goes first, metrics next, subscores last.
_COMPACTION = (
    (6, 200, 200, True, True),
    (6, 60, 120, True, True),
    (6, 0, 60, True, True),
    (6, 0, 60, False, True),
    (4, 0, 40, False, True),
    (4, 0, 20, False, False),
)


class EvaluationBatch(BaseModel):
    """What an evaluation pod is asked to run (mounted from the batch ConfigMap)."""

    model_config = ConfigDict(extra="forbid")

    evaluator: str  # a file path (it may import modules beside it) or a dotted module name
    entrypoint: str
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    tasks: list[EvaluationTask]


def remap(path: str) -> str:
    """Prefix an absolute path with ``$RETUNE_PATH_PREFIX`` if it is set."""
    prefix = os.environ.get("RETUNE_PATH_PREFIX", "")
    if prefix and os.path.isabs(path):
        return prefix.rstrip("/") + path
    return path


def encode_outcomes(
    outcomes: Iterable[tuple[str, EvaluationOutcome]], limit: int = TERMINATION_MESSAGE_LIMIT
) -> str:
    """Encode (task id, outcome) pairs as ASCII JSON of at most ``limit`` bytes.

    Floats are rounded, then feedback and details truncated, then metrics and finally
    subscores dropped, until the document fits. If even that is too big, trailing
    outcomes are left out (``"n"`` counts them) and decode as INFRASTRUCTURE failures.
    """
    pairs = list(outcomes)
    for step in _COMPACTION:
        items = [_encode_one(task_id, outcome, *step) for task_id, outcome in pairs]
        text = _dump({"v": FORMAT_VERSION, "o": items})
        if len(text) <= limit:
            return text
    while items:
        items.pop()
        text = _dump({"v": FORMAT_VERSION, "o": items, "n": len(pairs) - len(items)})
        if len(text) <= limit:
            return text
    return _dump({"v": FORMAT_VERSION, "error": "the outcomes do not fit", "n": len(pairs)})


def decode_outcomes(
    text: str, task_ids: Sequence[str] | None = None
) -> dict[str, EvaluationOutcome]:
    """Decode :func:`encode_outcomes` output (or an error document) into outcomes.

    With ``task_ids``, every task the message does not cover gets an INFRASTRUCTURE
    failure, so the caller always has one outcome per task it sent.
    """
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
            raise ValueError("not a retune outcome document")
        error = str(document.get("error", ""))
        decoded = {str(item["i"]): _decode_one(item) for item in document.get("o", [])}
        if document.get("n"):
            error = error or "the outcome did not fit the termination message"
    except (ValueError, KeyError, TypeError) as exc:
        decoded, error = {}, f"unreadable termination message: {exc}"
    for task_id in task_ids or ():
        if task_id not in decoded:
            detail = error or "the evaluation pod reported no outcome for this task"
            decoded[task_id] = EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, detail)
    return decoded


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _encode_one(
    task_id: str,
    outcome: EvaluationOutcome,
    digits: int,
    feedback: int,
    detail: int,
    metrics: bool,
    subscores: bool,
) -> dict[str, Any]:
    item: dict[str, Any] = {"i": task_id, "t": _round(outcome.evaluator_seconds, 3)}
    result = outcome.result
    if result is None:
        item["f"] = str(outcome.failure or FailureReason.INFRASTRUCTURE)
        if detail and outcome.detail:
            item["d"] = _cut(outcome.detail, detail)
        return item
    item["s"] = _round(result.score, digits)
    if subscores and result.subscores:
        item["ss"] = {k: _round(v, digits) for k, v in result.subscores.items()}
    if metrics and result.metrics:
        item["m"] = {k: _round(v, digits) for k, v in result.metrics.items()}
    if feedback and result.feedback:
        item["fb"] = _cut(result.feedback, feedback)
    return item


def _decode_one(item: dict[str, Any]) -> EvaluationOutcome:
    seconds = float(item.get("t", 0.0))
    if "s" in item:
        result = EvaluationResult(
            score=item["s"],
            subscores=item.get("ss", {}),
            metrics=item.get("m", {}),
            feedback=item.get("fb", ""),
        )
        return EvaluationOutcome(result=result, evaluator_seconds=seconds)
    return EvaluationOutcome.failed(FailureReason(item["f"]), item.get("d", ""), seconds)


def run_batch(batch: EvaluationBatch) -> list[tuple[str, EvaluationOutcome]]:
    """Run every task of a batch in this process, which acts as the zygote."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # candidates may not start threads (RLIMIT_NPROC=0)
    evaluator = batch.evaluator
    if evaluator.endswith(".py") or os.sep in evaluator:
        evaluator = remap(evaluator)
    module = load_evaluator(evaluator)
    network = isolate_process_network()
    with SandboxHarness(module, batch.entrypoint, batch.limits, network=network) as harness:
        print(f"retune-evaluate: isolation {json.dumps(harness.probe())}", file=sys.stderr)
        gc.freeze()
        outcomes = []
        for task in batch.tasks:
            try:
                outcome = harness.run(task)
            except Exception as exc:  # the harness itself failed, not the candidate
                detail = f"the harness failed: {exc!r}"
                outcome = EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, detail)
            outcomes.append((task.task_id, outcome))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns 0 when outcomes were written, 2 when the batch failed."""
    parser = argparse.ArgumentParser(prog="retune-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", help=f"batch JSON (default $RETUNE_BATCH or {DEFAULT_BATCH})")
    parser.add_argument("--output", help=f"where to write outcomes (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    batch_path = remap(args.batch or os.environ.get("RETUNE_BATCH") or DEFAULT_BATCH)
    output = remap(args.output or DEFAULT_OUTPUT)
    status = 0
    try:
        batch = EvaluationBatch.model_validate_json(Path(batch_path).read_bytes())
        text = encode_outcomes(run_batch(batch))
    except Exception as exc:  # a bad batch or evaluator: every task fails, with the reason
        print(f"retune-evaluate: {exc}", file=sys.stderr)
        text = _dump({"v": FORMAT_VERSION, "error": _cut(str(exc) or repr(exc), 1000)})
        status = 2
    try:
        Path(output).write_text(text, encoding="ascii")
    except OSError as exc:
        print(f"retune-evaluate: cannot write {output}: {exc}", file=sys.stderr)
        status = status or 1
    print(text, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
