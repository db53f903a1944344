"""Property-based fuzzing driven from an OpenAPI spec (Hypothesis), and the error contract it checks.

Each operation in a spec (method, path, JSON body schema, header and path parameters) gives a strategy
of requests: bodies valid for the schema, bodies a little off (a field dropped, added or of another
type), any JSON, malformed JSON, the wrong content type, and header values from their schema or any
bytes an HTTP client can send (non-ASCII, not UTF-8), on the operation's headers and on those Serve
reads. A response passes when it is no 5xx and, if a 4xx, has the contract's JSON error body.

Used by tests/test_fuzz_serving.py (the apps in-process), tests/live/test_bad_input.py and the bench's
fuzz section (the running stack).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

# Headers Serve's proxy or ray.serve.llm decode (stack.serving.api_errors.DECODED_HEADERS), sent now and
# then with any bytes.
SERVE_HEADERS = ("serve_multiplexed_model_id", "x-request-id", "x-session-id", "x-request-timeout-seconds",
                 "traceparent")
# Bytes a real client can put in a header value (h11: visible ASCII and obs-text, no controls).
HEADER_BYTES = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
CAP = 8  # generated strings, lists and objects stay small unless the schema asks for more
ERROR_KEYS = {"message", "type", "param", "code"}
ERROR_TYPE = re.compile(r"[a-z][a-z0-9_]*")  # invalid_request_error, not_found, ...: never a class name


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    required: bool


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with {name} for path parameters
    body: dict[str, Any] | None  # the JSON body's schema
    headers: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None

    def __repr__(self) -> str:
        body = None if self.body is None else self.body[:300]
        return f"FuzzRequest({self.method} {self.path!r}, headers={list(self.headers)!r}, body={body!r})"


def operations(spec: dict[str, Any]) -> list[Operation]:
    ops = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = [Param(p["name"], resolve(spec, p.get("schema", {})), bool(p.get("required")))
                      for p in op.get("parameters", [])]
            content = op.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {}).get("schema")
            ops.append(Operation(
                method=method.upper(), path=path, body=None if body is None else resolve(spec, body),
                headers=tuple(p for p, raw in zip(params, op.get("parameters", []), strict=True)
                              if raw["in"] == "header"),
                path_params=tuple(p for p, raw in zip(params, op.get("parameters", []), strict=True)
                                  if raw["in"] == "path")))
    return ops


def resolve(spec: dict[str, Any], schema: Any) -> Any:
    """The schema with every $ref replaced by what it names (the specs here have no recursive models)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            *_, name = schema["$ref"].split("/")
            return resolve(spec, spec["components"]["schemas"][name])
        return {k: resolve(spec, v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve(spec, v) for v in schema]
    return schema


# --- values from a JSON schema ---

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=CAP)
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=CAP), inner, max_size=3), max_leaves=8)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for the schema (the JSON Schema subset pydantic emits), small where it allows; the
    schema's own examples too, which reach what random values rarely do (a row of the right width)."""
    if schema.get("examples"):
        rest = {k: v for k, v in schema.items() if k != "examples"}
        generated = from_schema(rest)
        return st.one_of(generated, generated, st.sampled_from(schema["examples"]))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):  # {"type": ["string", "null"]}
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind is None and "properties" in schema:
        kind = "object"
    return {
        "string": _string, "integer": _integer, "number": _number, "boolean": lambda s: st.booleans(),
        "null": lambda s: st.none(), "array": _array, "object": _object,
    }.get(kind, lambda s: ANY_JSON)(schema)


# Strings that break text handling: controls, format characters, odd spaces, combining marks, surrogate
# neighbours, a byte-order mark, markup. Valid JSON strings all, and valid for a plain string schema.
NAUGHTY = ["\x00", "\x1b[31m", "\u200b", "\ufeff", "\u3000", "\u2028", "e\u0301", "\u202eabc", "\U0001f642",
           "\ud7ff\ue000", "\r\n", "<script>", "%s%n", "null", "-0", "\\u0000"]
ODD_CHARS = st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"])


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        upper = min(high or CAP * 4, max(low, CAP * 4))
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= upper)
    size = {"min_size": low, "max_size": max(low, min(high or CAP, CAP))}
    strings = st.text(**size) | st.text(ODD_CHARS, **size) | st.sampled_from(
        [n for n in NAUGHTY if low <= len(n) <= (high or len(n))] or ["x" * low])
    if high is not None:  # the boundary, where off-by-one lives
        strings |= st.just("x" * high)
    return strings


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[int]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = math.floor(schema["exclusiveMinimum"]) + 1
    if "exclusiveMaximum" in schema:
        high = math.ceil(schema["exclusiveMaximum"]) - 1
    return st.integers(None if low is None else math.ceil(low), None if high is None else math.floor(high))


def _number(schema: dict[str, Any]) -> st.SearchStrategy[float | int]:
    floats = st.floats(min_value=schema.get("exclusiveMinimum", schema.get("minimum")),
                       max_value=schema.get("exclusiveMaximum", schema.get("maximum")),
                       exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema,
                       allow_nan=False, allow_infinity=False)
    return floats | _integer(schema)


def _array(schema: dict[str, Any]) -> st.SearchStrategy[list[Any]]:
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    items = from_schema(schema.get("items", {}))
    return st.lists(items, min_size=low, max_size=max(low, min(high if high is not None else CAP, CAP)))


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties", {})
    if not props:
        extra = schema.get("additionalProperties", True)
        values = from_schema(extra) if isinstance(extra, dict) else ANY_JSON
        return st.dictionaries(st.text(max_size=CAP), values, max_size=3)
    required = set(schema.get("required", []))
    return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                 optional={k: from_schema(v) for k, v in props.items() if k not in required})


@st.composite
def near_schema(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A value valid for the schema, or one a little off it, or any JSON."""
    value = draw(from_schema(schema))
    how = draw(st.sampled_from(["valid", "valid", "drop", "extra", "retype", "over", "any"]))
    if how == "any":
        return draw(ANY_JSON)
    if how == "over":  # past a limit: a string or list one longer than its max
        return draw(_over(schema))
    if not isinstance(value, dict) or how == "valid":
        return value
    value = dict(value)
    if how == "drop" and value:
        del value[draw(st.sampled_from(sorted(value)))]
    elif how == "extra":
        value[draw(st.text(min_size=1, max_size=CAP))] = draw(ANY_JSON)
    elif how == "retype" and value:
        value[draw(st.sampled_from(sorted(value)))] = draw(ANY_JSON)
    return value


def _over(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Objects whose string or list fields run one past maxLength or maxItems."""
    props = schema.get("properties", {})
    over = {}
    for name, sub in props.items():
        for branch in sub.get("anyOf", [sub]):
            if "maxLength" in branch:
                over[name] = "y" * (branch["maxLength"] + 1)
            elif "maxItems" in branch:
                over[name] = [1] * (branch["maxItems"] + 1)
    if not over:
        return from_schema(schema)
    return from_schema(schema).flatmap(
        lambda value: st.sampled_from(sorted(over)).map(
            lambda k: {**value, k: over[k]} if isinstance(value, dict) else value))


# --- whole requests ---

def header_value(schema: dict[str, Any] | None, examples: list[str]) -> st.SearchStrategy[bytes]:
    """Half the time a value that may pass (known, from the schema, any ASCII), else one that must not."""
    bad = st.one_of(st.lists(st.sampled_from(HEADER_BYTES), min_size=1, max_size=CAP * 2).map(bytes),
                    st.text(alphabet=st.characters(min_codepoint=0xA1, max_codepoint=0x2FFF), min_size=1,
                            max_size=4).map(lambda s: ("t-" + s).encode()),  # UTF-8, not ASCII
                    st.just(b"\xff\xfe"))
    return st.booleans().flatmap(lambda good: good_header_value(schema, examples) if good else bad)


def good_header_value(schema: dict[str, Any] | None, examples: list[str]) -> st.SearchStrategy[bytes]:
    options = [st.lists(st.sampled_from(HEADER_BYTES[:0x5E]), max_size=CAP * 2).map(bytes)]  # any ASCII
    if schema is not None:
        options.append(from_schema(schema).filter(lambda v: isinstance(v, str)).map(
            lambda v: v.encode("utf-8")).filter(lambda b: all(c in HEADER_BYTES for c in b)))
    if examples:
        options.append(st.sampled_from(examples).map(str.encode))
    return st.one_of(options)


def spelled(name: str) -> st.SearchStrategy[str]:
    """The header's name as the spec has it, or as proxies rewrite it (Serve reads both)."""
    return st.sampled_from([name, name.replace("_", "-"), name.upper()])


CONTENT_TYPES = [b"application/json"] * 6 + [b"application/json; charset=utf-8", b"APPLICATION/JSON",
                                             b"text/plain", b"application/x-www-form-urlencoded", None,
                                             "application/jsön".encode()]


@st.composite
def raw_body(draw: st.DrawFn, schema: dict[str, Any]) -> bytes:
    how = draw(st.sampled_from(["json"] * 6 + ["truncated", "bytes", "text", "empty"]))
    if how == "json":
        return json.dumps(draw(near_schema(schema))).encode()
    if how == "truncated":
        text = json.dumps(draw(from_schema(schema))).encode()
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "bytes":
        return draw(st.binary(max_size=32))
    if how == "text":
        return draw(st.text(max_size=32)).encode()
    return b""


@st.composite
def requests(draw: st.DrawFn, op: Operation, examples: dict[str, list[str]] | None = None) -> FuzzRequest:
    """One request for the operation, as the module docstring says. `examples` gives known-good values
    of parameters by name (tenants, model ids) that a schema alone would almost never hit."""
    examples = examples or {}
    path = op.path
    for p in op.path_params:
        known = st.sampled_from(examples.get(p.name) or ["x"])
        value = draw(st.one_of(st.text(min_size=1, max_size=CAP), known))
        path = path.replace("{" + p.name + "}", quote(str(value), safe=""))
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 9)) < 4:  # well-formed throughout, so the success path is fuzzed too
        for p in op.headers:
            if p.required or draw(st.booleans()):
                known = examples.get(p.name, [])
                value = st.sampled_from(known).map(str.encode) if known else good_header_value(p.schema, [])
                headers.append((p.name.encode(), draw(value)))
        if op.body is None:
            return FuzzRequest(op.method, path, tuple(headers), None)
        headers.append((b"content-type", b"application/json"))
        return FuzzRequest(op.method, path, tuple(headers), json.dumps(draw(from_schema(op.body))).encode())
    for p in op.headers:
        absent = draw(st.integers(0, 9)) == 0 if p.required else draw(st.booleans())
        if absent:  # now and then even when required
            continue
        name = draw(spelled(p.name))
        headers.append((name.encode(), draw(header_value(p.schema, examples.get(p.name, [])))))
    # One of the headers Serve reads, on every request that is not well-formed: they go through code
    # (Serve's proxy, ray.serve.llm's middleware) that no spec describes.
    extra = draw(st.sampled_from(SERVE_HEADERS))
    headers.append((draw(spelled(extra)).encode(), draw(header_value(None, []))))
    body = None
    if op.body is not None:
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        if content_type is not None:
            headers.append((b"content-type", content_type))
        body = draw(raw_body(op.body))
    return FuzzRequest(op.method, path, tuple(headers), body)


def spec_requests(spec: dict[str, Any], examples: dict[str, list[str]] | None = None
                  ) -> st.SearchStrategy[FuzzRequest]:
    return st.one_of([requests(op, examples) for op in operations(spec)])


# --- the contract ---

def violations(status: int, content_type: str, body: bytes) -> list[str]:
    """What is wrong with a response to bad input: a 5xx, or a 4xx without the contract's JSON error."""
    shown = body[:200]
    if status >= 500:
        return [f"server error {status}: {shown!r}"]
    if status < 400:
        return []
    if not content_type.startswith("application/json"):
        return [f"{status} with Content-Type {content_type!r}, not JSON: {shown!r}"]
    try:
        doc = json.loads(body)
    except ValueError:
        return [f"{status} whose body is not JSON: {shown!r}"]
    error = doc.get("error") if isinstance(doc, dict) else None
    if set(doc) != {"error"} or not isinstance(error, dict) or set(error) != ERROR_KEYS:
        return [f"{status} whose body is not {{'error': {sorted(ERROR_KEYS)}}}: {shown!r}"]
    problems = []
    if error["code"] != status:
        problems.append(f"{status} whose error.code is {error['code']!r}")
    if not isinstance(error["message"], str) or not error["message"].strip():
        problems.append(f"{status} with no error.message")
    if not isinstance(error["type"], str) or not ERROR_TYPE.fullmatch(error["type"]):
        problems.append(f"{status} whose error.type {error['type']!r} is no OpenAI-style snake_case kind")
    if error["param"] is not None and not isinstance(error["param"], str):
        problems.append(f"{status} whose error.param is {error['param']!r}")
    return problems


# --- a run that counts rather than stops (the live stack, make bench) ---

Send = Callable[[FuzzRequest], tuple[int, str, bytes]]  # -> (status, content type, body)


@dataclass
class Report:
    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    contract_violations: int = 0
    transport_errors: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, with their requests

    def add_failure(self, request: FuzzRequest, problem: str, keep: int = 10) -> None:
        if len(self.failures) < keep:
            self.failures.append(f"{problem} <- {request!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "server_errors": self.server_errors, "contract_violations": self.contract_violations,
                "transport_errors": self.transport_errors, "failures": self.failures}


def run(strategy: st.SearchStrategy[FuzzRequest], send: Send, examples: int, seed_value: int,
        report: Report | None = None) -> Report:
    """Send `examples` generated requests and count what came back; never stops at a failure."""
    report = report or Report()

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(request: FuzzRequest) -> None:
        report.examples += 1
        try:
            status, content_type, body = send(request)
        except Exception as err:  # a reset connection is what a dying replica looks like from outside
            report.transport_errors += 1
            report.add_failure(request, f"{type(err).__name__}: {err}")
            return
        report.statuses[status] += 1
        problems = violations(status, content_type, body)
        if problems:
            report.server_errors += status >= 500
            report.contract_violations += status < 500
            report.add_failure(request, "; ".join(problems))

    one()
    return report
