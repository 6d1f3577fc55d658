"""The server's ``get_all`` query language over plain dicts: filters, projection, order, paging.

Mirrors ``GetMixin`` in apiserver/database/model/base.py closely enough for the fields clients
send: list filters (``-x`` and ``__$not`` exclude, ``__$all``/``__$any`` operators, ``None`` for
"empty"), date filters (``>``, ``>=``, ``<``, ``<=``, or a two-value range; an unparseable date is
dropped silently, as on the server), two-value range fields, regex pattern fields, ``_any_``/
``_all_``, ``only_fields`` projection with dotted paths, ``order_by`` with ``-`` for descending
(``id`` appended as the tie-breaker), and ``page``/``page_size`` capped at 500.
Pure functions; state runs them under its lock. Unknown request keys are ignored.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from . import dates, errors

Doc = dict[str, Any]
T = TypeVar("T")
Predicate = Callable[[Doc], bool]

MAX_PAGE_SIZE: Final = 500
_MISSING: Final = object()
_DATE_OPS: Final = (">=", "<=", ">", "<")
_DATE_RE: Final = re.compile(r"^(?P<op>>=|>|<=|<)?(?P<value>.*)$", re.DOTALL)
_AND: Final = "and"
_OR: Final = "or"
_LIST_OPERATORS: Final = {"__$all": _AND, "__$and": _AND, "__$any": _OR, "__$or": _OR}


@dataclass(frozen=True)
class QuerySpec:
    """Which request keys filter which way for one entity kind (the server's QueryParameterOptions)."""

    list_fields: tuple[str, ...] = ("id", "tags", "system_tags")
    datetime_fields: tuple[str, ...] = ()
    range_fields: tuple[str, ...] = ()
    pattern_fields: tuple[str, ...] = ()
    equal_fields: tuple[str, ...] = ()
    text_fields: tuple[str, ...] = ("id", "name")
    hidden_tag: str | None = None

    def owns(self, patterns: tuple[str, ...], key: str) -> bool:
        return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in patterns)


TASKS: Final = QuerySpec(
    list_fields=(
        "id",
        "user",
        "tags",
        "system_tags",
        "type",
        "status",
        "project",
        "parent",
        "hyperparams.*",
        "execution.queue",
        "models.input.model",
    ),
    datetime_fields=("status_changed", "last_update", "last_change"),
    range_fields=("created", "started", "active_duration", "last_metrics.*", "last_iteration"),
    pattern_fields=("name", "comment"),
    equal_fields=("runtime.*",),
    text_fields=("id", "name", "comment"),
    hidden_tag="hidden",
)
MODELS: Final = QuerySpec(
    list_fields=("tags", "system_tags", "framework", "uri", "id", "user", "project", "task", "parent"),
    datetime_fields=("last_update", "last_change"),
    range_fields=("created", "last_iteration"),
    pattern_fields=("name", "comment"),
    equal_fields=("ready",),
    text_fields=("id", "name", "comment", "task"),
)
PROJECTS: Final = QuerySpec(
    list_fields=("id", "user", "tags", "system_tags", "parent", "path"),
    range_fields=("last_update",),
    pattern_fields=("name", "basename", "description"),
    text_fields=("id", "name", "description"),
    hidden_tag="hidden",
)
QUEUES: Final = QuerySpec(
    list_fields=("id", "tags", "system_tags"),
    datetime_fields=("last_update",),
    pattern_fields=("name", "display_name"),
    text_fields=("id", "name"),
)


# ---- reading values -------------------------------------------------------------------------


def value_at(doc: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path through nested dicts, or the module's missing marker."""
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def values_at(doc: Mapping[str, Any], path: str) -> list[Any]:
    """All values at a dotted path, looking through lists as Mongo does."""
    nodes: list[Any] = [doc]
    for part in path.split("."):
        found: list[Any] = []
        for node in nodes:
            if isinstance(node, Mapping):
                if part in node:
                    found.append(node[part])
            elif isinstance(node, list):
                found.extend(item[part] for item in node if isinstance(item, Mapping) and part in item)
        nodes = found
    out: list[Any] = []
    for node in nodes:
        if isinstance(node, list):
            out.extend(node)
        elif node is not None:
            out.append(node)
    return out


def clone(value: T) -> T:
    """Deep copy of JSON-shaped data (dicts, lists, scalars); much cheaper than copy.deepcopy."""
    return cast(T, _clone(value))


def _clone(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _clone(v) for k, v in value.items()}
    if kind is list:
        return [_clone(v) for v in value]
    return value


# ---- filters --------------------------------------------------------------------------------


def compile_filter(data: Mapping[str, Any], spec: QuerySpec) -> list[Predicate]:
    """Predicates (all must hold) for the filter keys of a get_all request."""
    preds: list[Predicate] = []
    for key, value in data.items():
        pred: Predicate | None = None
        if spec.owns(spec.pattern_fields, key):
            pred = _pattern_predicate(key, value)
        elif spec.owns(spec.list_fields, key):
            pred = _list_predicate(key, value)
        elif spec.owns(spec.range_fields, key):
            pred = _range_predicate(key, value)
        elif spec.owns(spec.equal_fields, key):
            pred = _equal_predicate(key, value)
        elif key in spec.datetime_fields:
            pred = _date_predicate(key, value)
        elif key in ("_any_", "_or_", "_all_", "_and_"):
            pred = _multi_field_predicate(key, value, spec)
        elif key == "search_text":
            pred = _text_predicate(value, spec)
        if pred is not None:
            preds.append(pred)
    if spec.hidden_tag and not data.get("search_hidden") and not data.get("id"):
        hidden = spec.hidden_tag
        preds.append(lambda d: hidden not in d.get("system_tags", ()))
    return preds


def include_values(data: Mapping[str, Any], key: str) -> list[str] | None:
    """The plain values of an include-only list filter (usable for an index), else None."""
    value = data.get(key)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return None
    if all(isinstance(v, str) and v and not v.startswith(("-", "__$")) for v in items):
        return list(items)
    return None


def _list_predicate(field: str, data: Any) -> Predicate | None:
    items = data if isinstance(data, (list, tuple)) else [data]
    actions: dict[str, set[str]] = {"in": set(), "nin": set(), "all": set()}
    global_op: str | None = None
    context = _OR
    legacy = True
    negate_next: str | None = None
    allow_empty = False
    for item in items:
        if item is None:
            negate_next = None
            allow_empty = True
            global_op = global_op or _AND
            continue
        if not isinstance(item, str):
            raise errors.FIELDS_VALUE_ERROR("invalid value type, string expected", field=field, value=str(item))
        if item == "__$nop":
            negate_next = None
            context, legacy = _OR, True
            global_op = global_op or _AND
            continue
        if item.startswith("__$"):
            if negate_next:
                raise errors.FIELDS_VALUE_ERROR("Value is expected after", field=field, operator=negate_next)
            if item == "__$not":
                negate_next = item
                continue
            op = _LIST_OPERATORS.get(item)
            if op is None:
                raise errors.FIELDS_VALUE_ERROR("Unsupported operator", field=field, operator=item)
            context, legacy = op, False
            global_op = global_op or op
            continue
        global_op = global_op or _AND
        include = True
        if negate_next:
            include, negate_next = False, None
        elif legacy and item.startswith("-"):
            item = item[1:]
            if not item:
                raise errors.FIELDS_VALUE_ERROR("Missing value after the exclude prefix -", field=field, value=item)
            include = False
        action = ("all" if include else "nin") if context == _AND else ("in" if include else "nin")
        actions[action].add(item)
    if negate_next:
        raise errors.FIELDS_VALUE_ERROR("Value is expected after", operator=negate_next)

    simple = _simple_predicate(field, actions, allow_empty)
    if simple is not None:
        return simple
    checks: list[Callable[[list[Any]], bool]] = []
    if actions["in"]:
        wanted = frozenset(actions["in"])
        checks.append(lambda vals: any(v in wanted for v in vals))
    if actions["nin"]:
        banned = frozenset(actions["nin"])
        checks.append(lambda vals: not any(v in banned for v in vals))
    if actions["all"]:
        required = frozenset(actions["all"])
        checks.append(lambda vals: required.issubset(vals))
    if not checks and not allow_empty:
        return None
    use_any = global_op == _OR
    if "." not in field:

        def get(doc: Doc) -> list[Any]:
            value = doc.get(field)
            if value is None:
                return []
            return value if isinstance(value, list) else [value]

    else:

        def get(doc: Doc) -> list[Any]:
            return values_at(doc, field)

    def pred(doc: Doc) -> bool:
        vals = get(doc)
        if allow_empty and not vals:
            return True
        if not checks:
            return False
        if use_any:
            return any(check(vals) for check in checks)
        return all(check(vals) for check in checks)

    return pred


def _simple_predicate(field: str, actions: dict[str, set[str]], allow_empty: bool) -> Predicate | None:
    """Fast path for the common filters: one top-level field, only includes or only excludes."""
    if "." in field or allow_empty or actions["all"] or bool(actions["in"]) == bool(actions["nin"]):
        return None
    if actions["in"]:
        wanted = frozenset(actions["in"])

        def includes(doc: Doc) -> bool:
            value = doc.get(field)
            if isinstance(value, list):
                return any(v in wanted for v in value)
            return isinstance(value, str) and value in wanted

        return includes
    banned = frozenset(actions["nin"])

    def excludes(doc: Doc) -> bool:
        value = doc.get(field)
        if isinstance(value, list):
            return not any(v in banned for v in value)
        return not (isinstance(value, str) and value in banned)

    return excludes


def _date_bounds(field: str, data: Any) -> tuple[list[tuple[str, str]], bool]:
    """Comparisons to apply, and whether a missing date matches (an open-ended range does)."""
    items = data if isinstance(data, list) else [data]
    if len(items) == 2 and not any(isinstance(d, str) and d.startswith(_DATE_OPS) for d in items):
        low, high = items
        if low is None and high is None:
            raise errors.VALIDATION_ERROR(f"At least one of min or max values should be provided for field {field}")
        bounds = [(op, dates.normalize(v)) for op, v in ((">=", low), ("<=", high)) if v is not None]
        return [(op, v) for op, v in bounds if v is not None], low is None
    by_op: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str):
            raise errors.FIELDS_VALUE_ERROR("failed parsing query field", field=field)
        match = _DATE_RE.match(item)
        value = dates.normalize(match.group("value")) if match else None
        if match and value is not None:
            by_op[match.group("op") or "=="] = value  # the server keeps the last condition per operator
    return list(by_op.items()), False


def _date_predicate(field: str, data: Any) -> Predicate | None:
    bounds, include_missing = _date_bounds(field, data)
    if not bounds:
        return None  # nothing parseable: the server drops the filter without a word

    def pred(doc: Doc) -> bool:
        value = value_at(doc, field)
        if value is _MISSING or value is None:
            return include_missing
        return _compare_all(value, bounds)

    return pred


def _compare_all(value: Any, bounds: list[tuple[str, Any]]) -> bool:
    if value is _MISSING or value is None:
        return False
    try:
        for op, bound in bounds:
            if not _compare(value, op, bound):
                return False
    except TypeError:
        return False
    return True


def _compare(value: Any, op: str, bound: Any) -> bool:
    if op == ">":
        return bool(value > bound)
    if op == ">=":
        return bool(value >= bound)
    if op == "<":
        return bool(value < bound)
    if op == "<=":
        return bool(value <= bound)
    return bool(value == bound)


def _range_bound(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return dates.normalize(value)
    return None


def _range_predicate(field: str, data: Any) -> Predicate | None:
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise errors.VALIDATION_ERROR(f"Min and max values should be specified for range field {field}")
    low, high = data
    if low is None and high is None:
        raise errors.VALIDATION_ERROR(f"At least one of min or max values should be provided for field {field}")
    bounds = [(op, _range_bound(v)) for op, v in ((">=", low), ("<=", high)) if v is not None]
    usable = [(op, b) for op, b in bounds if b is not None]
    if not usable:
        return None
    include_missing = low is None

    def pred(doc: Doc) -> bool:
        value = value_at(doc, field)
        if value is _MISSING or value is None:
            return include_missing
        return _compare_all(value, usable)

    return pred


def _regex(pattern: Any, flags: int = 0) -> re.Pattern[str] | None:
    if not pattern:
        return None
    if not isinstance(pattern, str):
        # The server hands the value to re.compile() while running the query: a 500, not a 400.
        raise errors.GENERAL_ERROR("first argument must be string or compiled pattern", value=str(pattern))
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise errors.INVALID_REGEX(pattern=pattern, error=str(exc)) from exc


def _pattern_predicate(field: str, data: Any) -> Predicate | None:
    regex = _regex(data)
    if regex is None:
        return None

    def pred(doc: Doc) -> bool:
        value = value_at(doc, field)
        return isinstance(value, str) and regex.search(value) is not None

    return pred


def _equal_predicate(field: str, data: Any) -> Predicate:
    return lambda doc: value_at(doc, field) == data


def _multi_field_predicate(key: str, data: Any, spec: QuerySpec) -> Predicate | None:
    if not isinstance(data, Mapping):
        raise errors.FIELDS_VALUE_ERROR("incorrect field format", field=key)
    fields = [f for f in data.get("fields") or [] if isinstance(f, str)]
    if not fields:
        return None
    combine = any if key in ("_any_", "_or_") else all
    regex = _regex(data.get("pattern"), re.IGNORECASE)
    if regex is not None:
        rx = regex
        return lambda doc: combine(any(rx.search(str(v)) for v in values_at(doc, f)) for f in fields)
    date_fields = [f for f in fields if f in spec.datetime_fields]
    if "datetime" not in data or not date_fields:
        return None
    bounds, _ = _date_bounds(key, data["datetime"])
    if not bounds:
        return None
    return lambda doc: combine(_compare_all(value_at(doc, f), bounds) for f in date_fields)


def _text_predicate(data: Any, spec: QuerySpec) -> Predicate | None:
    if not isinstance(data, str) or not data.strip():
        return None
    needle = data.strip().lower()
    fields = spec.text_fields
    return lambda doc: any(isinstance(v, str) and needle in v.lower() for f in fields for v in values_at(doc, f))


# ---- ordering, paging, selection, projection ------------------------------------------------


def order_fields(data: Mapping[str, Any]) -> list[str]:
    """The request's ``order_by`` with ``id`` added as tie-breaker, or [] for natural order."""
    raw = data.get("order_by")
    if not raw:
        return []
    fields = [f for f in (raw if isinstance(raw, list) else [raw]) if isinstance(f, str) and f.strip("-")]
    if fields and not any(f in ("id", "-id") for f in fields):
        fields.append("id")
    return fields


def paging(data: Mapping[str, Any]) -> tuple[int, int]:
    """(start, size) from ``page``/``page_size``; the server caps a page at 500 and defaults to it."""
    page = data.get("page")
    page_size = data.get("page_size")
    if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 0):
        raise errors.VALIDATION_ERROR("page must be >=0", field="page")
    if page_size is None:
        page_size = MAX_PAGE_SIZE
    if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
        raise errors.VALIDATION_ERROR("page_size must be >0", field="page_size")
    size = min(page_size, MAX_PAGE_SIZE)
    return (page or 0) * size, size


def scroll_size(data: Mapping[str, Any]) -> int:
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise errors.VALIDATION_ERROR(
            "Integer size parameter greater than 1 should be provided when working with scroll"
        )
    return size


def _sort_key(value: Any) -> tuple[int, Any]:
    """Mongo-like order across types: missing/null first, then numbers, strings, the rest."""
    kind = type(value)
    if kind is str:
        return (2, value)
    if value is _MISSING or value is None:
        return (0, 0)
    if kind in (bool, int, float):
        return (1, float(value))
    return (3, json.dumps(value, sort_keys=True, default=str))


def _key_for(path: str) -> Callable[[Doc], Any]:
    if path == "id":
        return operator.itemgetter("id")  # always present, always a string
    if "." not in path:
        return lambda doc: _sort_key(doc.get(path, _MISSING))
    return lambda doc: _sort_key(value_at(doc, path))


def select(
    docs: Iterable[Doc], preds: Sequence[Predicate], order_by: Sequence[str], start: int, size: int
) -> list[Doc]:
    """The page of matching docs; without ordering it stops reading once the page is full."""
    if order_by:
        matched = [d for d in docs if all(p(d) for p in preds)]
        for field in reversed(order_by):
            matched.sort(key=_key_for(field.lstrip("-")), reverse=field.startswith("-"))
        return matched[start : start + size]
    if not preds:
        return list(itertools.islice(docs, start, start + size))
    out: list[Doc] = []
    skipped = 0
    for doc in docs:
        ok = True
        for pred in preds:
            if not pred(doc):
                ok = False
                break
        if not ok:
            continue
        if skipped < start:
            skipped += 1
            continue
        out.append(doc)
        if len(out) >= size:
            break
    return out


class Projection:
    """``only_fields`` compiled once per call into a tree, then applied to each document."""

    def __init__(self, only_fields: Sequence[str] | None) -> None:
        fields = [f for f in only_fields or () if isinstance(f, str) and f.strip("-")]
        include = [f for f in fields if not f.startswith("-")]
        self.exclude = [f[1:].split(".") for f in fields if f.startswith("-")] if not include else []
        self.tree: dict[str, Any] | None = None
        if include:
            tree: dict[str, Any] = {}
            for path in ["id", *include]:
                node = tree
                parts = path.split(".")
                for part in parts[:-1]:
                    child = node.get(part, {})
                    if child is None:  # a parent is already taken whole
                        break
                    node = node.setdefault(part, child)
                else:
                    node[parts[-1]] = None
            self.tree = tree

    def __call__(self, doc: Mapping[str, Any]) -> Doc:
        if self.tree is not None:
            return _apply_tree(doc, self.tree)
        copied: Doc = _clone(doc)
        for parts in self.exclude:
            _drop(copied, parts)
        return copied


def _apply_tree(src: Mapping[str, Any], tree: Mapping[str, Any]) -> Doc:
    out: Doc = {}
    for key, sub in tree.items():
        value = src.get(key, _MISSING)
        if value is _MISSING:
            continue
        kind = type(value)
        if sub is None:
            out[key] = _clone(value) if kind is dict or kind is list else value
        elif kind is dict:
            out[key] = _apply_tree(value, sub)
        elif kind is list:
            out[key] = [_apply_tree(v, sub) if type(v) is dict else {} for v in value]
    return out


def _drop(doc: Any, parts: list[str]) -> None:
    if isinstance(doc, list):
        for item in doc:
            _drop(item, parts)
        return
    if not isinstance(doc, dict) or parts[0] not in doc:
        return
    if len(parts) == 1:
        del doc[parts[0]]
    else:
        _drop(doc[parts[0]], parts[1:])
