"""The Prometheus backend: instant queries through ``prometheus_api_client``.

Each query must reduce to exactly one number: an instant vector with one series, or a
scalar. Anything else becomes a named outcome (see :mod:`retune.signals.metrics`):

==============================================  ===============
answer                                          outcome
==============================================  ===============
one series / a scalar with a finite value       ``Value``
an empty vector                                 ``NoData``
NaN or ±Inf, several series, a range vector,
a string                                        ``Invalid``
HTTP 400/422 (parse or execution error)         ``BadQuery``
connection refused, timeout, TLS failure,
HTTP 401/403/404/5xx, a non-Prometheus answer   ``Unavailable``
==============================================  ===============
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from retune.signals.metrics import BadQuery, Invalid, NoData, Sample, Unavailable, number

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_RETRIES = 1
_SHOWN_SERIES = 3
_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.DOTALL)


class PrometheusProvider:
    """A :class:`~retune.signals.metrics.MetricsProvider` backed by one Prometheus server.

    ``timeout`` bounds each HTTP request and is also sent as the query's own evaluation
    timeout. ``retries`` applies to connection failures and HTTP 502/503/504 only (a read
    timeout is not retried, so a query never takes much longer than ``timeout``).
    ``bearer_token_file`` is re-read on every query, since mounted tokens rotate.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        bearer_token: str | None = None,
        bearer_token_file: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
        verify_tls: bool = True,
        ca_file: str | Path | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if bearer_token is not None and bearer_token_file is not None:
            raise ValueError("set bearer_token or bearer_token_file, not both")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = dict(headers or {})
        if bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._token_file = Path(bearer_token_file) if bearer_token_file is not None else None
        session = requests.Session()
        session.verify = str(ca_file) if ca_file is not None else verify_tls
        retry = Retry(
            total=retries,
            connect=retries,
            read=False,
            status=retries,
            status_forcelist=(502, 503, 504),
            backoff_factor=0.2,
            raise_on_status=False,
        )
        self._client = PrometheusConnect(
            url=self.url, headers=self._headers, retry=retry, session=session, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.url!r})"

    def query(self, promql: str) -> Sample:
        """Run ``promql`` as an instant query; never raises."""
        try:
            self._client.headers = self._request_headers()
        except OSError as error:
            return Unavailable(f"cannot read bearer token file {self._token_file}: {error}")
        try:
            result = self._client.custom_query(
                promql, params={"timeout": f"{self.timeout:g}"}, timeout=self.timeout
            )
        except PrometheusApiClientException as error:
            return _http_problem(str(error), self.url)
        except requests.exceptions.JSONDecodeError as error:
            return Unavailable(f"{self.url} did not answer like the Prometheus API: {error}")
        except requests.exceptions.Timeout:
            return Unavailable(f"Prometheus at {self.url} did not answer within {self.timeout:g}s")
        except requests.exceptions.SSLError as error:
            return Unavailable(
                f"TLS to {self.url} failed ({_root_cause(error)}); set a CA file or disable "
                "verification"
            )
        except requests.exceptions.ConnectionError as error:
            return Unavailable(f"cannot connect to Prometheus at {self.url}: {_root_cause(error)}")
        except requests.exceptions.RequestException as error:
            return Unavailable(f"request to Prometheus at {self.url} failed: {error}")
        except (ValueError, KeyError, TypeError) as error:
            return Unavailable(f"{self.url} did not answer like the Prometheus API: {error!r}")
        return reduce_result(result)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self._token_file is not None:
            headers["Authorization"] = f"Bearer {self._token_file.read_text().strip()}"
        return headers


def reduce_result(result: Any) -> Sample:
    """Reduce the ``data.result`` of an instant query to one :data:`Sample`.

    A vector or matrix result is a list of ``{"metric": ..., "value"/"values": ...}``;
    a scalar or string result is ``[timestamp, "text"]``.
    """
    if not isinstance(result, list):
        return Invalid(f"unexpected result shape: {result!r:.200}")
    if not result:
        return NoData("the query returned no series")
    if not isinstance(result[0], dict):  # a scalar (or string): [timestamp, "value"]
        if len(result) != 2:
            return Invalid(f"unexpected scalar shape: {result!r:.200}")
        return number(result[1], "the result")
    if "values" in result[0]:
        return Invalid(
            "the query returned a range vector; use an instant query, "
            "e.g. wrap the range in avg_over_time(...)"
        )
    if len(result) > 1:
        shown = ", ".join(_labels(series) for series in result[:_SHOWN_SERIES])
        more = ", ..." if len(result) > _SHOWN_SERIES else ""
        return Invalid(
            f"the query returned {len(result)} series ({shown}{more}); aggregate them to one, "
            "e.g. sum(...) or max(...)"
        )
    pair = result[0].get("value")
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return Invalid(f"unexpected sample shape: {result[0]!r:.200}")
    return number(pair[1], "the value")


def _labels(series: Mapping[str, Any]) -> str:
    metric = series.get("metric") or {}
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(metric.items()))
    return "{" + inner + "}"


def _http_problem(message: str, url: str) -> Sample:
    """Map the client's ``HTTP Status Code N (b'body')`` error to an outcome."""
    match = _STATUS.match(message)
    if match is None:
        return Unavailable(f"Prometheus at {url} failed: {message}")
    status = int(match.group(1))
    error_type, detail = _error_body(match.group(2))
    if status in (400, 422):
        return BadQuery(f"Prometheus rejected the query ({error_type or status}): {detail}")
    if status in (401, 403):
        return Unavailable(
            f"Prometheus at {url} refused the credentials (HTTP {status}); check the bearer "
            "token or headers"
        )
    if status == 404:
        return Unavailable(f"no Prometheus API at {url} (HTTP 404); check the URL")
    if error_type == "timeout":
        return Unavailable(f"the query timed out in Prometheus (HTTP {status}): {detail}")
    return Unavailable(f"Prometheus at {url} answered HTTP {status}: {detail}")


def _error_body(text: str) -> tuple[str | None, str]:
    """``(errorType, error)`` of a Prometheus error body given as the repr of bytes."""
    try:
        raw = ast.literal_eval(text)
        body = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    except (ValueError, SyntaxError):
        body = text
    try:
        payload = json.loads(body)
    except ValueError:
        return None, body.strip()[:300] or "(empty body)"
    if not isinstance(payload, dict):
        return None, body.strip()[:300]
    return payload.get("errorType"), str(payload.get("error", body.strip()[:300]))


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error chain, without the noise."""
    seen: Sequence[object] = error.args
    cause: object = error
    while seen and isinstance(seen[0], BaseException):
        cause = seen[0]
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            cause = reason
        seen = cause.args if isinstance(cause, BaseException) else ()
    text = str(cause)
    if "Connection refused" in text:
        return "connection refused"
    return text[:300]
