"""The ``retune`` command line: thin adapters over the library."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from retune import __version__

if TYPE_CHECKING:
    from retune.local.run import RunOptions, RunResult
    from retune.local.tiers import TierOption

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_VALIDATION_REFUSED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    the run finished; held-out validation passed, or no candidate beat the seed
  2    the target or the options cannot be used (one line per problem, with the field),
       or the seed policy fails its own evaluation
  3    the run finished but held-out validation refused the winner (result.json and
       report.html are written and say why)
  130  interrupted (Ctrl-C or SIGTERM); continue with --resume"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _model_tier(text: str) -> TierOption:
    from retune.local.tiers import parse_tier_option

    try:
        return parse_tier_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `retune run`; `retune check` takes the same ones and checks them."""
    parser.add_argument("target", type=Path, help="the OptimizationTarget YAML")
    parser.add_argument(
        "--seed", type=int, help="seed for every random choice (default: spec.search.seed)"
    )
    parser.add_argument("--max-evaluations", type=_positive_int, help="evaluation budget")
    parser.add_argument("--max-seconds", type=_positive_float, help="wall-time budget in seconds")
    parser.add_argument("--max-usd", type=float, help="USD budget for LLM calls")
    parser.add_argument(
        "--output",
        type=Path,
        help="directory for result.json, report.html, checkpoint (default: runs/<target dir>)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    parser.add_argument(
        "--workers", type=_positive_int, help="evaluation processes (default: all cores)"
    )
    parser.add_argument(
        "--mutator", choices=["builtin", "llm"], help="override spec.search.mutator"
    )
    parser.add_argument(
        "--llm-base-url",
        metavar="URL",
        help="an OpenAI-compatible endpoint for every model tier (implies --mutator llm)",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        type=_model_tier,
        default=[],
        metavar="ROLE=MODEL@IN/OUT",
        help="a model tier at --llm-base-url: ROLE is cheap (ordinary mutations), strong "
        "(paradigm shifts) or init; IN/OUT are US dollars per million prompt/completion "
        "tokens, e.g. --model cheap=gpt-4o-mini@0.15/0.60 --model strong=gpt-4o@2.50/10; "
        "replaces the spec's tiers of that role (repeatable; implies --mutator llm)",
    )
    parser.add_argument(
        "--free-start",
        type=_non_negative_int,
        metavar="N",
        help="with the LLM tiers, most evaluations of the free start, a search of the "
        "built-in edits before the models' (default: spec.search.freeStart, 0: none)",
    )
    parser.add_argument(
        "--llm-api-key-env",
        metavar="VAR",
        help="environment variable holding the API key of the --model tiers",
    )
    parser.add_argument("--prometheus-url", help="read the workload profile from this Prometheus")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retune",
        description="Keep a deployment's policy tuned to its own workload and hardware.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="tune a target locally (no cluster needed)",
        description="Tune a target locally: search, validate the winner on held-out seeds, "
        "write result.json and report.html.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(run)

    check = commands.add_parser(
        "check",
        help="check a target and run options as `retune run` would, without running",
        description="Check everything `retune run` with the same arguments checks before it "
        "starts (the spec, files, seed policy against the sandbox allowlist, profile, model "
        "tiers and keys, output directory), print every problem, and exit.",
        epilog="exit codes: 0 ready to run; 2 problems found (one line each, with the field "
        "or option to change)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(check)

    commands.add_parser("crd", help="print the OptimizationTarget CRD generated from the models")

    manifest = commands.add_parser(
        "manifest",
        help="print a target file as the cluster takes it (the seed file inlined)",
        description="Print the target in TARGET ready for `kubectl apply -f -`: the seed "
        "policy file inlined (the cluster cannot read files beside the target), the rest as "
        "written. Refuses a target `retune check` refuses, and one the cluster would (no "
        "spec.evaluator.image).",
        epilog="exit codes: 0 printed; 2 problems found (one line each, with the field)",
    )
    manifest.add_argument("target", type=Path, help="the OptimizationTarget YAML")
    manifest.add_argument("-n", "--namespace", help="set metadata.namespace")

    export = commands.add_parser(
        "export",
        help="write a target's validated revision, its evidence and diff as files",
        description="Write the revision a target recommends or holds for approval (else its "
        "latest validated one) into a directory a GitOps repository can take: the policy "
        "file, evidence.json (scores against the stable policy, per subscore) and "
        "policy.diff (against the stable policy). Reads the target and its ConfigMaps only.",
        epilog="exit codes: 0 written; 2 the target, its revision or a policy cannot be read",
    )
    export.add_argument("name", help="the OptimizationTarget's name")
    export.add_argument("-n", "--namespace", default="default", help="its namespace")
    export.add_argument(
        "--output", type=Path, help="directory to write to (default: ./<name>-<revision>)"
    )
    export.add_argument("--kubeconfig", help="a kubeconfig (default: in-cluster, $KUBECONFIG)")

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
    operator.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object a line, with the target's namespace and name under `k8s` "
        "(default text)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "operator" and args.log_format == "json":
        import kopf

        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON, log_refkey="k8s")
        return _operator(args)
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
        return _check(args)
    if args.command == "manifest":
        return _manifest(args)
    if args.command == "export":
        return _export(args)
    if args.command == "operator":
        return _operator(args)
    return _run(args)


def _operator(args: argparse.Namespace) -> int:
    from retune.handlers.operator import OperatorOptions, run_operator
    from retune.handlers.prometheus_auth import PrometheusAuth, PrometheusAuthError

    try:  # a malformed connection setting stops the start, not every later reconcile
        PrometheusAuth.from_env()
    except PrometheusAuthError as exc:
        print(f"retune operator: {exc}", file=sys.stderr)
        return EXIT_USAGE
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


def _export(args: argparse.Namespace) -> int:
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException

    from retune.handlers import export

    try:
        cluster = export.open_cluster(args.kubeconfig)
        found = export.gather_export(cluster, args.namespace, args.name)
    except export.ExportError as exc:
        print(f"retune export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiException as exc:
        print(f"retune export: the API server answered {exc.status} {exc.reason}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigException as exc:
        print(f"retune export: --kubeconfig: {exc}", file=sys.stderr)
        return EXIT_USAGE
    output = args.output or Path(f"{args.name}-{found.revision}")
    try:
        written = export.write_export(found, output)
    except OSError as exc:
        where = exc.filename or output
        print(f"retune export: --output: cannot write {where}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(path)
    return EXIT_OK


def _options(args: argparse.Namespace) -> RunOptions:
    from retune.local.run import RunOptions

    return RunOptions(
        output=args.output or Path("runs") / args.target.resolve().parent.name,
        seed=args.seed,
        max_evaluations=args.max_evaluations,
        max_seconds=args.max_seconds,
        max_usd=args.max_usd,
        resume=args.resume,
        workers=args.workers,
        mutator=args.mutator,
        llm_base_url=args.llm_base_url,
        models=list(args.models),
        free_start=args.free_start,
        llm_api_key_env=args.llm_api_key_env,
        prometheus_url=args.prometheus_url,
        show_progress=not args.quiet,
    )


def _check(args: argparse.Namespace) -> int:
    from retune.local.inputs import prepare
    from retune.spec import TargetValidationError, cluster_problems

    try:
        inputs = prepare(args.target, _options(args))
    except TargetValidationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    tiers = ", ".join(f"{t.name} ({t.role})" for t in inputs.models) or "none"
    print(
        f"{args.target}: OptimizationTarget {inputs.target.metadata.name} is ready to run "
        f"(mutator {inputs.mutator}, model tiers: {tiers})"
    )
    for problem in cluster_problems(inputs.target):  # not for `retune run`: a note only
        print(f"  in a cluster: {problem}")
    return EXIT_OK


def _manifest(args: argparse.Namespace) -> int:
    from retune.spec import TargetValidationError
    from retune.spec.manifest import cluster_manifest

    try:
        sys.stdout.write(cluster_manifest(args.target, namespace=args.namespace))
    except TargetValidationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from retune.evaluate.loader import EvaluatorLoadError
    from retune.local.inputs import CHECKPOINT, SPEND_JOURNAL
    from retune.local.run import RunError, run_target
    from retune.search.engine import EngineError
    from retune.spec import TargetValidationError

    options = _options(args)
    output = options.output
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run_target(args.target, options)
    except TargetValidationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except (RunError, EngineError, EvaluatorLoadError) as exc:
        print(f"retune: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the output directory: under a file, read-only, /proc...
        where = exc.filename or output
        print(f"retune: --output: cannot write {where}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if (output / CHECKPOINT).exists() or (output / SPEND_JOURNAL).exists():
            print(
                f"\nretune: interrupted; progress is saved. Continue with: retune run "
                f"{args.target} --output {output} --resume",
                file=sys.stderr,
            )
        else:
            print("\nretune: interrupted before anything was saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    _summarise(result, output)
    if result.validation is not None and not result.validation.passed:
        return EXIT_VALIDATION_REFUSED
    return EXIT_OK


def _summarise(result: RunResult, output: Path) -> None:
    print(
        f"seed score {result.seed_score:.4f} -> best score {result.best_score:.4f} "
        f"({result.improvement:+.2%}) after {result.evaluations} evaluations, "
        f"${result.cost_usd:.4f}, {result.wall_seconds:.0f}s ({result.stop_reason})"
    )
    validation = result.validation
    if validation is None:
        print("no candidate beat the seed policy; nothing to validate")
    elif validation.passed:
        print("validation on held-out seeds passed")
    else:
        print("validation on held-out seeds refused the winner: " + "; ".join(validation.reasons))
        print(
            "  (it would not be rolled out; a longer search, more evaluator.holdoutSeeds or a "
            "lower evaluator.minImprovement may change that; exit status 3)"
        )
    print(f"best policy: {output / result.best_policy_path}")
    print(f"report:      {output / 'report.html'}")


if __name__ == "__main__":
    sys.exit(main())
