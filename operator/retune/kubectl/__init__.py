"""``kubectl retune``: the kubectl plugin (the console script ``kubectl-retune``).

What it prints is :mod:`retune.kubectl.render`'s; here are the commands and the API calls.

Reads a target's status and Events and says, in a few lines, whether it is fine and what
it does; the controls set the same annotations as ``kubectl annotate`` would
(:mod:`retune.rollout.controls`), so the operator acts on them exactly as on a person's.
Nothing here decides anything: the operator does, at its next reconcile.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from retune import __version__
from retune.kubectl.render import Target, render_history, render_status
from retune.rollout.controls import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    UNDO_ANNOTATION,
)
from retune.spec import GROUP, KIND, PLURAL, VERSION, TargetStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
REQUEST_TIMEOUT = 30.0


class PluginError(RuntimeError):
    """Why a command cannot be carried out, and what to do."""


class TargetApi(Protocol):
    """What the plugin reads and writes (:class:`KubeTargetApi` in a cluster)."""

    def target(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """Set (a string) or remove (None) annotations of the target."""
        ...


class KubeTargetApi:
    """:class:`TargetApi` with the caller's kubeconfig credentials (a person's, not the
    operator's: what they may not do, the API server refuses)."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config

        from retune.handlers.kube import Cluster

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        self.cluster = Cluster(client.ApiClient(configuration))

    def target(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cluster.target(namespace, name)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        response = self.cluster.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}",
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(json.loads(response.data)["items"])

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        self.cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )


def read_target(api: TargetApi, namespace: str, name: str) -> Target:
    """The target, or :class:`PluginError` naming what is missing."""
    body = api.target(namespace, name)
    if body is None:
        raise PluginError(f"OptimizationTarget {namespace}/{name} not found")
    metadata = body.get("metadata") or {}
    try:
        status = TargetStatus.model_validate(body.get("status") or {})
    except ValueError:
        status = TargetStatus()  # an operator of another version wrote it: show what parses
    return Target(namespace, name, dict(metadata.get("annotations") or {}), status)


def undo_revision(status: TargetStatus, to: str | None) -> str:
    """The revision ``undo`` goes back to: ``to`` (a promoted revision, or its number in
    ``history``), else the last promoted revision before the stable one."""
    promoted = [r.revision for r in status.history if r.outcome == "Promoted"]
    if to is not None:
        if to.isdigit() and 1 <= int(to) <= len(status.history):
            to = status.history[int(to) - 1].revision
        if to not in promoted:
            raise PluginError(
                f"--to-revision {to}: this target never promoted it "
                f"(promoted: {', '.join(promoted) or 'none'}; see kubectl retune history)"
            )
        if to == status.stable_revision:
            raise PluginError(f"--to-revision {to}: it is the stable revision already")
        return to
    earlier = [r for r in promoted if r != status.stable_revision]
    if not earlier:
        raise PluginError("no earlier promoted revision to go back to (see kubectl retune history)")
    return earlier[-1]


# -- commands -------------------------------------------------------------------------------
def _set(
    key: str, value: str | None = "true"
) -> Callable[[TargetApi, Target, argparse.Namespace], str]:
    def command(api: TargetApi, target: Target, args: argparse.Namespace) -> str:
        api.annotate(target.namespace, target.name, {key: value})
        return f"{target.namespace}/{target.name}: " + (
            f"{key}={value} set" if value is not None else f"{key} removed"
        )

    return command


def _needs_rollout(
    control: Callable[[TargetApi, Target, argparse.Namespace], str],
) -> Callable[[TargetApi, Target, argparse.Namespace], str]:
    def command(api: TargetApi, target: Target, args: argparse.Namespace) -> str:
        if target.status.rollout is None:
            raise PluginError(
                f"{target.namespace}/{target.name} has no canary in flight "
                f"(phase {target.status.phase.value})"
            )
        return control(api, target, args)

    return command


def _approve(api: TargetApi, target: Target, args: argparse.Namespace) -> str:
    revision = args.revision
    approval = target.status.approval
    if revision is None:
        if approval is None or approval.state != "Waiting":
            raise PluginError(
                f"{target.namespace}/{target.name} has no revision waiting for approval "
                f"(phase {target.status.phase.value})"
            )
        revision = approval.revision
    return _set(APPROVE_ANNOTATION, revision)(api, target, args)


def _undo(api: TargetApi, target: Target, args: argparse.Namespace) -> str:
    revision = undo_revision(target.status, args.to_revision)
    done = _set(UNDO_ANNOTATION, revision)(api, target, args)
    if target.status.phase.value != "Stable":
        done += (
            f"; it goes out as a canary once the target is Stable (now {target.status.phase.value})"
        )
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl retune",
        description="Look at and steer retune's OptimizationTargets.",
        epilog="exit codes: 0 done; 1 the API server refused; 2 the target or the command "
        "cannot be used as asked (one line saying why)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("name", help="the OptimizationTarget")
    common.add_argument(
        "-n", "--namespace", default=None, help="its namespace (default: the context's)"
    )
    common.add_argument("--kubeconfig", help="a kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    common.add_argument("--context", help="the kubeconfig context to use")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("status", "phase, scores, spend, rollout step, conditions and the last Events"),
        ("history", "the finished rollouts, oldest first, numbered for undo"),
        ("abort", f"roll the canary in flight back now ({ABORT_ANNOTATION})"),
        (
            "promote",
            f"promote the canary in flight now, skipping its analysis ({PROMOTE_ANNOTATION})",
        ),
        ("pause", f"hold the canary at its share until resumed ({PAUSE_ANNOTATION})"),
        ("resume", f"lift a pause (removes {PAUSE_ANNOTATION})"),
        ("retune", f"start a new search now ({RETUNE_ANNOTATION})"),
    ):
        commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    approve = commands.add_parser(
        "approve",
        parents=[common],
        help=f"approve the revision waiting for approval ({APPROVE_ANNOTATION})",
    )
    approve.add_argument("revision", nargs="?", help="default: the one waiting")
    undo = commands.add_parser(
        "undo",
        parents=[common],
        help=f"roll an earlier promoted revision out again, as a canary ({UNDO_ANNOTATION})",
    )
    undo.add_argument(
        "--to-revision",
        help="a promoted revision, or its number in `history` (default: the last one before "
        "the stable)",
    )
    return parser


_COMMANDS: dict[str, Callable[[TargetApi, Target, argparse.Namespace], str]] = {
    "abort": _needs_rollout(_set(ABORT_ANNOTATION)),
    "promote": _needs_rollout(_set(PROMOTE_ANNOTATION)),
    "pause": _set(PAUSE_ANNOTATION),
    "resume": _set(PAUSE_ANNOTATION, None),
    "retune": _set(RETUNE_ANNOTATION),
    "approve": _approve,
    "undo": _undo,
}


def run(api: TargetApi, args: argparse.Namespace, namespace: str, now: datetime) -> str:
    """Carry a parsed command out; what to print."""
    target = read_target(api, namespace, args.name)
    if args.command == "status":
        return render_status(target, api.events(namespace, args.name), now)
    if args.command == "history":
        return render_history(target, now)
    return _COMMANDS[args.command](api, target, args) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The ``kubectl-retune`` console script."""
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException

    args = _parser().parse_args(argv)
    try:
        api = KubeTargetApi(args.kubeconfig, args.context)
        namespace = args.namespace or _context_namespace(args.kubeconfig, args.context)
        sys.stdout.write(run(api, args, namespace, datetime.now(UTC)))
    except PluginError as error:
        print(f"kubectl retune {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigException as error:
        print(f"kubectl retune: kubeconfig: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ApiException as error:
        print(
            f"kubectl retune {args.command}: the API server answered {error.status} {error.reason}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), current) if context else current
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


if __name__ == "__main__":
    sys.exit(main())
