"""The ``retune`` command line: thin adapters over the library."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retune",
        description="Keep a deployment's policy tuned to its own workload and hardware.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="tune a target locally (no cluster needed)")
    run.add_argument("target", type=Path, help="the OptimizationTarget YAML")
    run.add_argument(
        "--seed", type=int, help="seed for every random choice (default: spec.search.seed)"
    )
    run.add_argument("--max-evaluations", type=_positive_int, help="evaluation budget")
    run.add_argument("--max-seconds", type=_positive_float, help="wall-time budget in seconds")
    run.add_argument("--max-usd", type=float, help="USD budget for LLM calls")
    run.add_argument(
        "--output", type=Path, help="directory for result.json, report.html, checkpoint"
    )
    run.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    run.add_argument(
        "--workers", type=_positive_int, help="evaluation processes (default: all cores)"
    )
    run.add_argument("--mutator", choices=["builtin", "llm"], help="override spec.search.mutator")
    run.add_argument("--llm-base-url", help="an OpenAI-compatible endpoint for both model tiers")
    run.add_argument("--prometheus-url", help="read the workload profile from this Prometheus")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    check = commands.add_parser("check", help="validate a target YAML and print its problems")
    check.add_argument("target", type=Path)

    commands.add_parser("crd", help="print the OptimizationTarget CRD generated from the models")

    operator = commands.add_parser(
        "operator", help="run the Kubernetes operator (kopf, standalone: one replica)"
    )
    scope = operator.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="serve the OptimizationTargets of NS (repeat for several)",
    )
    scope.add_argument("--all-namespaces", action="store_true", help="serve every namespace")
    operator.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics, /healthz, /readyz"
    )
    operator.add_argument("--metrics-host", default="0.0.0.0", help="address to serve them on")
    operator.add_argument(
        "--prometheus-url",
        default=os.environ.get("RETUNE_PROMETHEUS_URL"),
        help="Prometheus for targets that set no spec.profile.prometheusUrl "
        "(default: $RETUNE_PROMETHEUS_URL)",
    )
    operator.add_argument(
        "--max-concurrent-searches",
        type=_positive_int,
        default=4,
        help="searches running at once over all targets; the others wait (default 4)",
    )
    operator.add_argument(
        "--max-evaluation-jobs",
        type=_positive_int,
        default=16,
        help="evaluation Jobs in flight over all targets (default 16)",
    )
    operator.add_argument("--kubeconfig", help="a kubeconfig (default: in-cluster, $KUBECONFIG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet = logging.INFO if args.command == "operator" else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format=(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if args.command == "operator"
            else "%(levelname)s %(name)s: %(message)s"
        ),
    )
    if args.command == "crd":
        from retune.crd import render_crd

        sys.stdout.write(render_crd())
        return 0
    if args.command == "check":
        return _check(args.target)
    if args.command == "operator":
        return _operator(args)
    return _run(args)


def _operator(args: argparse.Namespace) -> int:
    from retune.handlers.operator import OperatorOptions, run_operator

    run_operator(
        OperatorOptions(
            namespaces=list(args.namespaces or []),
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
            prometheus_url=args.prometheus_url or None,
            max_concurrent_searches=args.max_concurrent_searches,
            max_evaluation_jobs=args.max_evaluation_jobs,
            kubeconfig=args.kubeconfig,
        )
    )
    return 0


def _check(path: Path) -> int:
    from retune.spec import TargetValidationError, load_target

    try:
        target = load_target(path)
    except TargetValidationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: OptimizationTarget {target.metadata.name} is valid")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from retune.local.run import RunError, RunOptions, run_target
    from retune.search.engine import EngineError
    from retune.spec import TargetValidationError

    output = args.output or Path("runs") / args.target.resolve().parent.name
    options = RunOptions(
        output=output,
        seed=args.seed,
        max_evaluations=args.max_evaluations,
        max_seconds=args.max_seconds,
        max_usd=args.max_usd,
        resume=args.resume,
        workers=args.workers,
        mutator=args.mutator,
        llm_base_url=args.llm_base_url,
        prometheus_url=args.prometheus_url,
        show_progress=not args.quiet,
    )
    if args.llm_base_url and not args.mutator:
        options.mutator = "llm"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run_target(args.target, options)
    except TargetValidationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except (RunError, EngineError) as exc:
        print(f"retune: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"\nretune: interrupted; progress is saved. Continue with: retune run {args.target} "
            f"--output {output} --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    _summarise(result, output)
    return 0


def _summarise(result: dict[str, object], output: Path) -> None:
    seed = float(result["seed_score"])  # type: ignore[arg-type]
    best = float(result["best_score"])  # type: ignore[arg-type]
    print(
        f"seed score {seed:.4f} -> best score {best:.4f} ({float(result['improvement']):+.2%}) "  # type: ignore[arg-type]
        f"after {result['evaluations']} evaluations, ${float(result['cost_usd']):.4f}, "  # type: ignore[arg-type]
        f"{float(result['wall_seconds']):.0f}s ({result['stop_reason']})"  # type: ignore[arg-type]
    )
    validation = result.get("validation")
    if isinstance(validation, dict):
        verdict = (
            "passed" if validation["passed"] else "failed: " + "; ".join(validation["reasons"])
        )
        print(f"validation on held-out seeds {verdict}")
    print(f"best policy: {output / str(result['best_policy_path'])}")
    print(f"report:      {output / 'report.html'}")


if __name__ == "__main__":
    sys.exit(main())
