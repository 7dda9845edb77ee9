"""Typed configuration: dataclasses whose fields carry their own rules, loaded from YAML.

Every configuration of the package (the training recipe's sections, the data section, the
model options) is a dataclass. A field's type is its annotation; its range, its choices or
a custom check are data on the field, declared with :func:`setting`::

    @dataclass
    class OptimConfig:
        config_key = "optim"                       # the section name used in messages
        lr: float = setting(0.01, range=Range(0, 10, lo_open=True))
        name: str = setting("sgd", choices=("sgd", "adamw"))

    def __post_init__(self):
        validate(self)                             # convert and check every field

:func:`from_mapping` builds such a class from a YAML mapping: nested dataclasses are built
from nested mappings, an unknown key is refused with the closest valid key, and every
problem is one :class:`ConfigError` of the form ``file:line: section.field: what is wrong,
what is allowed``. The line comes from the YAML parser's marks (:func:`read_yaml`), so every
key is located by construction. :func:`apply_overrides` applies ``--set a.b=value`` strings.

This module imports only the standard library and PyYAML, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["ConfigError", "Range", "setting", "problem_of", "validate", "fail", "check_value", "unknown_key",
           "from_mapping", "Where", "read_yaml", "parse_yaml", "parse_override", "apply_overrides", "numeric_ranges",
           "range_table"]


class ConfigError(ValueError):
    """A configuration problem. ``str()`` names the file and line (where known), the key, what
    is wrong and what is allowed; ``key`` is the dotted key and ``problem`` the bare problem."""

    key: str | None = None
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: ``lo``..``hi``, each end closed unless ``*_open``.
    Infinite and NaN values are outside every range. ``str()`` is the interval as written in
    the field docs, e.g. ``(0, 10]``; an infinite ``hi`` means no upper bound."""

    lo: float
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        def num(v):
            return str(int(v)) if float(v).is_integer() else str(v)

        close = ")" if self.hi_open or math.isinf(self.hi) else "]"
        return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{close}"


def setting(default: Any = MISSING, *, default_factory: Callable[[], Any] | Any = MISSING,
            range: Range | None = None, choices: tuple | None = None,
            check: Callable[[Any], str | None] | None = None) -> Any:
    """A dataclass field with its rules as metadata.

    ``range``: allowed numbers (for a list or tuple field: each item); ``choices``: the
    allowed values; ``check``: ``value -> problem or None`` for any other rule (called with
    the converted value, not with ``None``). ``None`` passes every rule of a field whose
    type allows it.
    """
    meta = {"range": range, "choices": tuple(choices) if choices is not None else None, "check": check}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def problem_of(validator: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A ``check`` for :func:`setting` from a function that raises ``ValueError`` for a bad
    value (the rule a layer or op already enforces), so that the rule is stated once."""
    def check(value: Any) -> str | None:
        try:
            validator(value)
        except ValueError as exc:
            return str(exc)
        return None
    return check


# --------------------------------------------------------------------------- locations


class Where:
    """Where a configuration's keys are: ``source`` (a file name), ``lines`` (dotted key ->
    1-based line) and ``overrides`` (dotted key -> the ``--set`` text that replaced it)."""

    def __init__(self, source: str | None = None, lines: dict[str, int] | None = None,
                 overrides: dict[str, str] | None = None):
        self.source, self.lines, self.overrides = source, lines or {}, overrides or {}

    def __call__(self, key: str) -> str | None:
        """``file:line`` of ``key`` (or of its nearest section that has a line), ``--set``
        for an overridden key, ``file`` without a line, ``None`` without a file."""
        if key in self.overrides:
            return "--set"
        if self.source is None:
            return None
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            line = self.lines.get(".".join(parts[:n]))
            if line:
                return f"{self.source}:{line}"
        return self.source


def fail(cls_or_obj: Any, key: str, problem: str, where: Where | None = None) -> typing.NoReturn:
    """Raise the configuration error of ``cls_or_obj`` (its ``config_error`` class, else
    :class:`ConfigError`) for ``key``: ``where: key: problem``."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    place = where(key) if where is not None else None
    head = f"--set {key}" if place == "--set" else f"{place}: {key}" if place else key
    error = getattr(cls, "config_error", ConfigError)(f"{head}: {problem}")
    error.key, error.problem = key, problem
    raise error


# --------------------------------------------------------------------------- types


class _Bad(Exception):
    """A value that does not fit its type or rule (the message is the problem)."""


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and Ellipsis not in args:
            return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[-1]}s"
        item = _describe(args[0]).split(" ", 1)[-1] if args else "value"
        return f"a list of {item}s"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             type(None): "null", dict: "a mapping"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (lists become tuples where the type says so, integers floats);
    raises :class:`_Bad` when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg)
            except _Bad:
                pass
        raise _Bad(f"must be {_describe(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Bad(f"must be {_describe(tp)}, got {value!r}")
        if origin is tuple and args and Ellipsis not in args and len(value) != len(args):
            raise _Bad(f"must hold {len(args)} values, got {list(value)!r}")
        item = args[0] if args else Any
        try:
            items = [_convert(v, item) for v in value]
        except _Bad:
            raise _Bad(f"must be {_describe(tp)}, got {list(value)!r}") from None
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Bad(f"must be a mapping, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Bad(f"must be {_describe(tp)}, got {value!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check(f: Field, tp: Any, value: Any) -> Any:
    """``value`` converted to the field's type and checked against its rules."""
    value = _convert(value, tp)
    if value is None:
        return value
    rng, choices, check = f.metadata.get("range"), f.metadata.get("choices"), f.metadata.get("check")
    if choices is not None and value not in choices:
        raise _Bad(f"must be one of {', '.join(map(str, choices))}; got {value!r}")
    if rng is not None:
        many = isinstance(value, (list, tuple))
        if any(v not in rng for v in (value if many else (value,))):
            what = "each value must be" if many else "must be"
            raise _Bad(f"{what} in the range {rng}, got {list(value) if many else value!r}")
    problem = check(value) if check is not None else None
    if problem:
        raise _Bad(problem)
    return value


def _key(obj_or_cls: Any, name: str, prefix: str | None = None) -> str:
    section = prefix if prefix is not None else getattr(obj_or_cls, "config_key", "")
    return f"{section}.{name}" if section else name


def validate(obj: Any) -> None:
    """Convert and check every field of dataclass ``obj`` in place (call it from
    ``__post_init__``); raises the class's error naming the first bad field."""
    hints = _hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        tp = hints[f.name]
        if is_dataclass(tp) and isinstance(tp, type) and isinstance(value, tp):
            continue
        try:
            object.__setattr__(obj, f.name, _check(f, tp, value))
        except _Bad as exc:
            fail(obj, _key(obj, f.name), str(exc))


def check_value(cls: type, name: str, value: Any, key: str, where: Where | None = None) -> Any:
    """``value`` for field ``name`` of ``cls``, converted and checked (errors name ``key``)."""
    f = next(f for f in fields(cls) if f.name == name)
    try:
        return _check(f, _hints(cls)[name], value)
    except _Bad as exc:
        fail(cls, key, str(exc), where)


def unknown_key(cls: type, key: str, valid: list[str], where: Where | None = None,
                noun: str = "key") -> typing.NoReturn:
    """Refuse ``key`` (dotted), naming the closest of ``valid`` (or all of them)."""
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    fail(cls, key, f"unknown {noun}; {guess}valid {noun}s are {', '.join(valid)}", where)


def from_mapping(cls: type, data: Any, where: Where | None = None, prefix: str | None = None):
    """Build dataclass ``cls`` from a mapping, nested dataclasses from nested mappings.

    Values are converted to the fields' types and checked against their rules; an unknown
    key, a wrong type or a value outside its rules raises ``cls``'s error with the key's
    place in ``where``. ``prefix`` is the dotted section of ``cls`` (default its
    ``config_key``).
    """
    prefix = getattr(cls, "config_key", "") if prefix is None else prefix
    if not isinstance(data, dict):
        fail(cls, prefix or "config", f"must be a mapping of settings, got {data!r}", where)
    names = [f.name for f in fields(cls) if f.init]
    for key in data:
        if key not in names:
            unknown_key(cls, _key(cls, str(key), prefix), names, where)
    hints, kwargs = _hints(cls), {}
    for f in fields(cls):
        if f.name not in data:
            continue
        key, value, tp = _key(cls, f.name, prefix), data[f.name], hints[f.name]
        if is_dataclass(tp) and isinstance(tp, type):
            kwargs[f.name] = from_mapping(tp, value if value is not None else {}, where, key)
            continue
        if (where is not None and key in where.overrides and _accepts_str(tp)
                and isinstance(value, (bool, int, float))):
            value = where.overrides[key]  # --set data.template=00001 means the text, not the number
        kwargs[f.name] = check_value(cls, f.name, value, key, where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a rule between fields, raised by __post_init__: add the place
        if exc.key is None or where is None:
            raise
        fail(cls, exc.key, exc.problem, where)


def _accepts_str(tp: Any) -> bool:
    return tp is str or str in typing.get_args(tp)


def numeric_ranges(cls: type, prefix: str | None = None) -> dict[str, Range]:
    """Dotted key -> :class:`Range` of every field of ``cls`` that declares one."""
    prefix = getattr(cls, "config_key", "") if prefix is None else prefix
    return {_key(cls, f.name, prefix): f.metadata["range"] for f in fields(cls) if f.metadata.get("range")}


def range_table(sections: dict[str, type]) -> str:
    """A markdown table of every field with a range in ``sections`` (prefix -> class): the
    key, ``(each)`` for lists, and the range (``or null`` where the field may be null)."""
    rows = ["| field | allowed |", "|---|---|"]
    for prefix, cls in sections.items():
        hints = _hints(cls)
        for f in fields(cls):
            rng = f.metadata.get("range")
            if rng is None:
                continue
            tp = hints[f.name]
            args = typing.get_args(tp)
            many = any(typing.get_origin(t) in (list, tuple) for t in (tp, *args))
            null = " or null" if type(None) in args else ""
            rows.append(f"| `{_key(cls, f.name, prefix)}`{' (each)' if many else ''} | {rng}{null} |")
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- YAML


def read_yaml(path: str | Path, max_bytes: int, max_nodes: int, error: type = ConfigError) -> tuple[Any, Where]:
    """Parse a YAML file: its data and a :class:`Where` with the line of every key.

    Refuses files over ``max_bytes`` and documents whose aliases expand to more than
    ``max_nodes`` values (nested aliases grow exponentially) before constructing them.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size:,} bytes is too large for a configuration file (at most "
                    f"{max_bytes:,}); is it the right file?")
    return parse_yaml(path.read_text(), str(path), max_nodes, error)


def parse_yaml(text: str, source: str | None = None, max_nodes: int = 100_000,
               error: type = ConfigError) -> tuple[Any, Where]:
    """Parse YAML text once: its data and a :class:`Where` (``source`` and each key's line,
    taken from the parser's marks)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, max_nodes) > max_nodes:
            raise error(f"{source or 'config'}: the YAML expands to more than {max_nodes:,} values "
                        f"(nested aliases); write it out plainly")
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise error(f"{source or 'config'}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    lines: dict[str, int] = {}

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1  # a repeated key: YAML keeps the last
                walk(v, key + ".")

    walk(node, "")
    return data, Where(source, lines)


def _expanded_size(root, limit: int) -> int:
    import yaml

    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a cycle counts once
        n = 1
        if isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n += sum(size(v) for v in node.value)
        sizes[id(node)] = min(n, limit + 1)
        return sizes[id(node)]

    return size(root)


def parse_override(item: str) -> tuple[str, Any, str]:
    """``"a.b=value"`` -> ``("a.b", value parsed as YAML, the value's text)``."""
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. optim.lr=0.02), got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from exc
    return key, value, text


def apply_overrides(raw: dict, overrides: list[str] | None, where: Where | None = None) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML, then converted to the
    field's type on load) to a raw mapping; records each key in ``where.overrides``."""
    raw = dict(raw)
    for item in overrides or []:
        key, value, text = parse_override(item)
        node = raw
        path = key.split(".")
        for part in path[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[path[-1]] = value
        if where is not None:
            where.overrides[key] = text
    return raw
