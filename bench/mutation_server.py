#!/usr/bin/env python3
"""A deterministic, OpenAI-compatible stand-in for real models.

It answers ``POST /v1/chat/completions`` with seeded mutations of the program in the
prompt, in the format the prompt asks for (SEARCH/REPLACE blocks, or a whole program in a
```python fence), with prose around them as a real model writes; a prompt listing a
parameters policy's parameters is answered by moving their values (and now and then by
breaking that task, as real models do). An answer is a function
of the model name, the prompt text, the request's ``seed`` field and ``--seed`` only --
never of request order -- so a run replays whatever the client's concurrency.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /stats`` (tokens
served per model), ``GET /calls`` (every counted answer in order, with the digest of the
program it wrote), ``GET|POST /admin/faults`` (read or replace the fault spec),
``POST /admin/reset`` (zero the stats, the calls and the repeat counts). Standard library
only. A ``/calls`` entry also says what was asked: whether it was a follow-up (more than
one user turn), its last message, its query parameters, its ``X-`` headers, which of
``max_tokens``/``max_completion_tokens``/``temperature`` it sent, and ``request``, a
digest of the model, prompt and ``seed`` (a request asked twice has the same one).

A model name may carry behaviours of the zoo (``zoo.py``): ``small:first-block+drift``.

The parent program is found under retune's heading (``## Program to change``),
OpenEvolve's (``# Current Program``) or LEVI's (``## v1`` and the headings of its init
and paradigm-shift prompts), so every framework can be benchmarked against it; the edits
depend only on the parent and the model, never on which framework asked.
With ``--fresh-repeats`` the n-th repeat of an identical request (same model, prompt and
``seed``) is answered as a new sample, as a model sampling at a temperature would: a
client that sends one fixed ``seed`` with every request (OpenEvolve does) would otherwise
get the same answer to the same prompt every time. A client that varies its seeds never
repeats a request, so this changes nothing for it.

Faults (``--faults``, comma-separated ``KIND[@MODEL]:P`` or ``KIND[@MODEL]:#N``): with
probability P per request (a seeded draw from the request's content), or for the next N
matching requests. Kinds: ``stall`` (alias ``timeout``: no answer for
``--stall-seconds``, then the connection closes), ``429`` (with Retry-After), ``500``,
``503``, ``drop`` (the connection closes with no answer), ``malformed`` (a 200 whose body
is not JSON), ``empty`` (a 200 with no choices), ``garbage`` (a 200 with prose and no
code), ``truncate`` (a 200 cut off at half length, finish_reason ``length``). Tokens are
counted in /stats exactly when a response carries a ``usage`` block: never for stall,
429, 5xx, drop or malformed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo
from mutation_edits import Hints, Style, hints_from_signature, mutate_source
from mutation_faults import Faults, parse_faults

TOKEN = re.compile(r"\w+|[^\w\s]")
PARENT_HEADING = "## Program to change"  # the heading retune's prompts put the parent under
# Where each framework's prompts put the program to edit; the first fence after the
# earliest heading found is the parent, so every framework's parent gets the same edits.
PARENT_HEADINGS = (
    PARENT_HEADING,
    # OpenEvolve: a line of its own, after "# Current Program Information".
    "# Current Program\n",
    # LEVI (levi-evolve 0.1.1): a mutation shows the parent as v1, its inspirations as
    # v2, v3...; its init phase asks for a different algorithm than the existing seeds
    # (the first one is edited), its paradigm shifts show one program per behavioural
    # region (the first is edited), and its variants of a shift show the shift's program.
    "## v1\n",
    "## Existing Seeds",
    "## Current Best Solutions",
    "## Base Paradigm Shift Solution",
    # GEPA (optimize_anything 0.1.4): the candidate, in a fence without a language tag.
    "## Current Component",
)
DIFF_MARKER = "SEARCH/REPLACE"
_SIGNATURE = re.compile(r"signature: `([^`]+)`")  # how retune's prompts state it
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)


@dataclass(frozen=True)
class ModelCard:
    name: str
    input_per_million: float
    output_per_million: float
    style: Style


MODELS = {
    "small": ModelCard("small", 0.15, 0.60, Style(min_edits=1, max_edits=2, structural=False)),
    "large": ModelCard("large", 2.50, 10.00, Style(min_edits=3, max_edits=5, structural=True)),
}


def count_tokens(text: str) -> int:
    """The stand-in tokenizer: words and single punctuation characters."""
    return len(TOKEN.findall(text))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return 3 + sum(4 + count_tokens(str(m.get("content") or "")) for m in messages)


def _draw(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# -- answers -------------------------------------------------------------------------------
def parent_program(prompt: str) -> str | None:
    """The first fenced program after a known parent heading, else the first one."""
    found = (prompt.find(heading) for heading in PARENT_HEADINGS)
    at = min((i for i in found if i >= 0), default=0)
    match = _FENCE.search(prompt, at)
    return match.group(1) + "\n" if match else None


def program_digest(code: str) -> str:
    """How ``/calls`` names a program: sha256 of its text without surrounding blank space."""
    return hashlib.sha256(code.strip().encode()).hexdigest()


def compose_answer(
    card: ModelCard,
    prompt: str,
    rng: random.Random,
    behaviours: frozenset[str] = frozenset(),
    limit: int = zoo.DEFAULT_OUTPUT_LIMIT,
) -> tuple[str, str | None]:
    """The answer's text, and the whole program it describes (None for prose only).

    ``behaviours`` are the zoo's (``zoo.py``) that act on this answer; ``limit`` is the
    request's output-token limit, which a verbose model overruns.
    """
    parent = zoo.program_to_edit(prompt, behaviours, parent_program(prompt))
    ranges = parameter_ranges(prompt)
    if parent is not None and ranges:
        return values_answer(card, parent, ranges, rng)
    signature = _SIGNATURE.search(prompt)
    hints = hints_from_signature(signature.group(1)) if signature else Hints()

    def variant() -> str | None:
        mutated = mutate_source(parent, card.style, rng, hints) if parent else None
        return zoo.spoil_program(mutated[0], behaviours, rng) if mutated else None

    mutated = mutate_source(parent, card.style, rng, hints) if parent else None
    if parent is None or mutated is None:
        return garbage_answer(rng), None
    new, labels = mutated
    new = zoo.spoil_program(new, behaviours, rng)
    changes = _join(labels)
    if zoo.wants_diff(prompt, behaviours, DIFF_MARKER):
        opener = rng.choice(
            [
                f"Looking at the per-subset scores, I'd {changes}.",
                f"The feedback points at one weakness; a focused fix is to {changes}.",
                f"One targeted improvement: {changes}.",
            ]
        )

        def other_diff() -> str | None:
            other = variant()
            return zoo.dress_diff(diff_blocks(parent, other), behaviours, rng) if other else None

        blocks = zoo.dress_diff(diff_blocks(parent, new), behaviours, rng)
        body = zoo.with_alternatives(blocks, other_diff, behaviours)
        answer = f"{opener}\n\n{body}\n\nThe interface is unchanged.\n"
        return zoo.pad_verbose(answer, behaviours, limit, rng), new
    opener = rng.choice(
        [
            "Here is a restructured version of the policy.",
            "Let me take a different approach to this policy.",
            "I rewrote the policy around a different weighting.",
        ]
    )

    def other_program() -> str | None:
        other = variant()
        return zoo.dress_program(other, behaviours, rng) if other else None

    code = zoo.with_alternatives(zoo.dress_program(new, behaviours, rng), other_program, behaviours)
    bullets = "\n".join(f"- {label[0].upper()}{label[1:]}" for label in labels)
    answer = f"{opener}\n\n{code}\n\nWhat changed:\n{bullets}\n"
    return zoo.pad_verbose(answer, behaviours, limit, rng), new


# A parameters policy's task lists what may move:
# "- `NAME`: [a whole number ]from A to B[, in steps of S]".
_PARAMETER = re.compile(
    r"^- `(\w+)`: (a whole number )?from (\S+) to ([^\s,]+)(?:, in steps of (\S+))?$",
    re.MULTILINE,
)
# How often a model answering a parameters task breaks it, as real ones do now and then:
# a value past its range, or a change to another line too.
VALUES_SLIPS = {"small": 0.3, "large": 0.1}


Range = tuple[float, float, bool, float | None]  # low, high, whole, step


def parameter_ranges(prompt: str) -> dict[str, Range]:
    """The parameters a prompt asks to move, with their ranges; empty for a code task."""
    ranges = {}
    for name, whole, low, high, step in _PARAMETER.findall(prompt):
        try:
            ranges[name] = (float(low), float(high), bool(whole), float(step) if step else None)
        except ValueError:
            continue
    return ranges


def values_answer(
    card: ModelCard,
    parent: str,
    ranges: dict[str, Range],
    rng: random.Random,
) -> tuple[str, str | None]:
    """An answer to a parameters task: SEARCH/REPLACE blocks moving values (``small`` one
    or two, nearby; ``large`` most of them, anywhere in range), now and then breaking the
    task the way a model does (:data:`VALUES_SLIPS`)."""
    lines = parent.splitlines()
    assigned = {}
    for number, line in enumerate(lines):
        match = re.match(r"^(\w+) = (.+)$", line)
        if match and match.group(1) in ranges:
            assigned[match.group(1)] = number
    if not assigned:
        return garbage_answer(rng), None
    bold = card.style.structural
    names = sorted(assigned)
    count = max(1, len(names) - 1) if bold else rng.randint(1, min(2, len(names)))
    slip = rng.random() < VALUES_SLIPS.get(card.name, 0.2)
    new_lines = list(lines)
    for name in rng.sample(names, count):
        low, high, whole, step = ranges[name]
        span = high - low
        try:
            current = float(lines[assigned[name]].split("=", 1)[1].split("#")[0])
        except ValueError:
            current = (low + high) / 2
        value = rng.uniform(low, high) if bold else current + rng.gauss(0, 0.15 * span)
        value = min(high, max(low, value))
        if step:
            value = min(high, low + round((value - low) / step) * step)
        if slip and rng.random() < 0.5:
            value = high + rng.uniform(0.05, 0.5) * span  # past its range
            slip = False
        shown = str(round(value)) if whole else f"{value:.6g}"
        new_lines[assigned[name]] = f"{name} = {shown}"
    if slip:  # and a change to a line the task said to keep
        body = [i for i, line in enumerate(lines) if line.startswith("    return ")]
        if body:
            at = rng.choice(body)
            new_lines[at] = lines[at].replace("return ", "return 1.01 * (", 1) + ")"
    new = "\n".join(new_lines) + ("\n" if parent.endswith("\n") else "")
    blocks = diff_blocks(parent, new)
    opener = "Moving the parameters toward what the subscores suggest:"
    return f"{opener}\n\n{blocks}\n", new


def garbage_answer(rng: random.Random) -> str:
    return rng.choice(
        [
            "I'm not sure what you would like me to change. Could you share more about the "
            "workload and the metric you care about?",
            "Great question! Tuning a policy like this depends on many factors, such as the "
            "access pattern, the cache size and the hardware. Consider profiling first.",
            "The current program already looks reasonable to me; I would keep it as it is.",
        ]
    )


def diff_blocks(old: str, new: str) -> str:
    """SEARCH/REPLACE blocks turning ``old`` into ``new``, each SEARCH unique in ``old``."""
    import difflib

    a, b = old.splitlines(), new.splitlines()
    for context in range(1, 5):
        groups = list(
            difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context)
        )
        blocks = []
        for group in groups:
            search = a[group[0][1] : group[-1][2]]
            replace = b[group[0][3] : group[-1][4]]
            blocks.append((search, replace))
        if all(_unique(old, s) for s, _ in blocks):
            break
    else:
        blocks = [(a, b)]
    return "\n\n".join(
        "<<<<<<< SEARCH\n" + "\n".join(s) + "\n=======\n" + "\n".join(r) + "\n>>>>>>> REPLACE"
        for s, r in blocks
    )


def _unique(text: str, lines: list[str]) -> bool:
    needle = "\n".join(lines) + "\n"
    return bool(lines) and any(line.strip() for line in lines) and (text.count(needle) == 1)


def _join(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def truncate_tokens(text: str, limit: int) -> str:
    """The prefix of ``text`` holding its first ``limit`` tokens."""
    matches = list(TOKEN.finditer(text))
    return text if len(matches) <= limit else text[: matches[limit - 1].end()] if limit else ""


# -- HTTP ----------------------------------------------------------------------------------
class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], args: argparse.Namespace) -> None:
        super().__init__(address, Handler)
        self.seed: int = args.seed
        self.faults = Faults(args.faults)
        self.stall_seconds: float = args.stall_seconds
        self.retry_after: float = args.retry_after
        self.verbose: bool = args.verbose
        self.fresh_repeats: bool = args.fresh_repeats
        self.api_key: str | None = args.api_key
        self.repeats: dict[str, int] = {}  # request digest -> times seen (--fresh-repeats)
        self.stats: dict[str, dict[str, int]] = {}
        self.calls: list[dict[str, object]] = []  # counted answers, in the order counted
        self.stats_lock = threading.Lock()

    def repeat_of(self, key: tuple[object, ...]) -> tuple[int, ...]:
        """``()`` the first time a request is seen, ``(n,)`` on its n-th repeat."""
        digest = hashlib.sha256(repr(key).encode()).hexdigest()
        with self.stats_lock:
            seen = self.repeats.get(digest, 0)
            self.repeats[digest] = seen + 1
        return (seen,) if seen else ()

    def count(
        self,
        model: str,
        prompt: int,
        completion: int,
        program: str | None = None,
        asked: dict[str, object] | None = None,
    ) -> None:
        with self.stats_lock:
            served = self.stats.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0})
            served["prompt_tokens"] += prompt
            served["completion_tokens"] += completion
            self.calls.append(
                {
                    "model": model,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "program_sha256": program_digest(program) if program else None,
                    **(asked or {}),
                }
            )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server
    query_string = ""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- routing ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path == "/v1/models":
            data = [
                {
                    "id": c.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "retune-bench",
                    "pricing": {
                        "input_per_million": c.input_per_million,
                        "output_per_million": c.output_per_million,
                    },
                    "edits": [c.style.min_edits, c.style.max_edits],
                }
                for c in MODELS.values()
            ]
            self._json(200, {"object": "list", "data": data})
        elif self.path == "/stats":
            with self.server.stats_lock:
                self._json(200, json.loads(json.dumps(self.server.stats)))
        elif self.path == "/calls":
            with self.server.stats_lock:
                self._json(200, list(self.server.calls))
        elif self.path == "/admin/faults":
            self._json(200, {"faults": self.server.faults.spec})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route, _, self.query_string = self.path.partition("?")
        if route == "/v1/chat/completions":
            key = self.server.api_key
            if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
                self._error(401, "Incorrect API key provided.", "invalid_api_key")
                return
            self._chat(body)
        elif self.path == "/admin/faults":
            try:
                text = body.decode()
                spec = json.loads(text)["faults"] if text.lstrip().startswith("{") else text
                self.server.faults.replace(spec)
            except (ValueError, KeyError, TypeError) as error:
                self._error(400, str(error), "invalid_request_error")
                return
            self._json(200, {"faults": self.server.faults.spec})
        elif self.path == "/admin/reset":
            with self.server.stats_lock:
                self.server.stats.clear()
                self.server.calls.clear()
                self.server.repeats.clear()
            self._json(200, {})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    # -- chat ------------------------------------------------------------------------------
    def _chat(self, body: bytes) -> None:
        try:
            request = json.loads(body)
            model, messages = request["model"], request["messages"]
            assert isinstance(messages, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            self._error(
                400, "the body must be JSON with `model` and `messages`", "invalid_request_error"
            )
            return
        try:
            base, behaviours = zoo.split_model(str(model))
        except ValueError:
            base, behaviours = "", ()
        card = MODELS.get(base)
        if card is None:
            self._error(404, f"the model `{model}` does not exist", "model_not_found")
            return
        refusal = zoo.reasoning_refusal(request) if "reasoning" in behaviours else None
        if refusal is not None:
            self._error(400, refusal, "invalid_request_error")
            return
        prompt = "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        key: tuple[object, ...] = (self.server.seed, model, prompt, request.get("seed"))
        if self.server.fresh_repeats:
            key += self.server.repeat_of(key)
        fault = self.server.faults.pick(model, _draw(*key, "fault").random())
        if fault in ("stall", "drop"):
            if fault == "stall":
                time.sleep(self.server.stall_seconds)
            self._drop()
        elif fault == "429":
            wait = self.server.retry_after
            headers = {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(int(wait * 1000))}
            self._error(429, "rate limit reached for requests", "rate_limit_exceeded", headers)
        elif fault in ("500", "503"):
            self._error(
                int(fault), "the server had an error while processing your request", "server_error"
            )
        elif fault == "malformed":
            self._send(200, b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"mess')
        else:
            follow_up = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
            acting = zoo.active(behaviours, follow_up)
            self._complete(card, prompt, messages, request, key, fault, acting)

    def _complete(
        self,
        card: ModelCard,
        prompt: str,
        messages: list[Any],
        request: dict[str, Any],
        key: tuple[object, ...],
        fault: str | None,
        behaviours: frozenset[str],
    ) -> None:
        rng = _draw(*key, "answer")
        program: str | None = None
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if fault == "garbage":
            text = garbage_answer(rng)
        else:
            cap = limit if isinstance(limit, int) else zoo.DEFAULT_OUTPUT_LIMIT
            text, program = compose_answer(card, prompt, rng, behaviours, cap)
        finish = "stop"
        if fault == "truncate":
            text, finish = truncate_tokens(text, count_tokens(text) // 2), "length"
        if isinstance(limit, int) and count_tokens(text) > limit:
            text, finish = truncate_tokens(text, limit), "length"
        usage_in = prompt_tokens([m for m in messages if isinstance(m, dict)])
        usage_out = 0 if fault == "empty" else count_tokens(text)
        choices = (
            []
            if fault == "empty"
            else [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ]
        )
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
        usable = finish == "stop" and fault != "empty"
        asked = {
            "request": digest,
            "follow_up": len(messages) > 2,
            "last_message": str(messages[-1].get("content") or "")[:4000],
            "query": dict(urllib.parse.parse_qsl(self.query_string)),
            "headers": {
                k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")
            },
            "output_limit": limit,
            "parameters": sorted(
                k for k in ("max_tokens", "max_completion_tokens", "temperature") if k in request
            ),
        }
        program = program if usable else None
        self.server.count(str(request["model"]), usage_in, usage_out, program, asked)
        self._json(
            200,
            {
                "id": f"chatcmpl-{digest}",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": choices,
                "usage": {
                    "prompt_tokens": usage_in,
                    "completion_tokens": usage_out,
                    "total_tokens": usage_in + usage_out,
                },
            },
        )

    # -- wire ------------------------------------------------------------------------------
    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        payload = {"error": {"message": message, "type": code, "param": None, "code": code}}
        self._json(status, payload, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client went away (it timed out, say)
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", default="", help='e.g. "429:0.2,500:0.1,stall@large:#1"')
    parser.add_argument("--stall-seconds", type=float, default=30.0)
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds a 429 asks for")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--fresh-repeats",
        action="store_true",
        help="answer the n-th repeat of an identical request as a new sample",
    )
    parser.add_argument(
        "--api-key",
        help="answer chat completions only with `Authorization: Bearer KEY` (else 401)",
    )
    args = parser.parse_args(argv)
    try:
        parse_faults(args.faults)
    except ValueError as error:
        parser.error(str(error))
    server = Server((args.host, args.port), args)
    port = server.server_address[1]
    print(f"mutation server listening on http://{args.host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
