"""Templates with a budget: rendering one text stops with a render error (RenderLimit) once it has run longer than
`limits.render_ms` or made more than `limits.render_chars` characters (engine/limits.py). decide() turns the
error into a transfer for a user's message, as for any template that fails.

Jinja's sandbox keeps templates from Python's insides and caps range() at 100,000 items; it does not bound time
or size. Where a template can spend either, this environment looks:
- **Loops.** Every `{% for %}` runs over its iterable through `kefu_loop`, which checks the clock each item: a
  loop that prints nothing (`{% for i in range(100000) %}{% endfor %}` inside another) stops as well as one
  that prints. Every call (a macro, a method, `loop()` of a recursive loop, `caller()`) checks it too.
- **Output.** What a text renders to is counted as it comes out. What loops, macros and `{% set %}`,
  `{% filter %}` and `{% call %}` blocks make along the way (kept in memory before it comes out, or never)
  is counted through `kefu_made`, up to MADE_FACTOR times the limit.
- **Operators and filters that multiply.** `'x' * 10**9`, `10 ** 10 ** 8`, `'%0999999999d' % 1`,
  `x|center(10**9)`, `items|join(long)`, `s|replace('a', long)` and the like are refused *before* they make
  anything: no string made while rendering may be longer than the limit, no list longer than range()'s cap.

Templates without loops or blocks are left as they are: only their output is counted (render.Text).
"""

from __future__ import annotations

import functools
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.exceptions import TemplateRuntimeError
from jinja2.sandbox import MAX_RANGE, SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from .limits import LIMITS

MADE_FACTOR = 4  # what loops and blocks may make along the way, in multiples of render_chars
MAX_INT_BITS = 100_000  # about 30,000 digits: an integer a template makes (str() refuses more than 4,300 anyway)
LARGE_LOOP = 100_000  # kefu check warns about nested loops over ranges whose counts multiply past this
_BUFFERED = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.AssignBlock)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_state = threading.local()  # deadline (perf_counter) and made (characters) of the render running now


class RenderLimit(TemplateRuntimeError):
    """A render ran past its time or size budget."""


def too_slow() -> RenderLimit:
    return RenderLimit(f"the template ran longer than {LIMITS.render_ms:g} ms (limits.render_ms)")


def too_long(what: str = "a text the template made", factor: int = 1) -> RenderLimit:
    return RenderLimit(f"{what} came to more than {LIMITS.render_chars * factor:,} characters "
                       "(limits.render_chars)")


def render(template: Any, context: dict[str, Any]) -> str:
    """Render a compiled template (Template.render without its copy of the context) within the budget."""
    limit = LIMITS.render_chars
    outer = getattr(_state, "deadline", None), getattr(_state, "made", 0)
    _state.deadline = time.perf_counter() + LIMITS.render_seconds
    _state.made = 0
    try:
        out = []
        size = 0
        for piece in template.root_render_func(template.new_context(context)):
            size += len(piece)
            if size > limit:
                raise too_long("the reply")
            out.append(piece)
        return "".join(out)
    finally:
        _state.deadline, _state.made = outer


def _tick() -> None:
    deadline = getattr(_state, "deadline", None)
    if deadline is not None and time.perf_counter() > deadline:
        raise too_slow()


@pass_context  # never evaluated at compile time: a generator is no constant
def _loop(context: Any, iterable: Iterable[Any]) -> Iterator[Any]:
    """A `{% for %}`'s iterable, checking the clock before each item."""
    deadline = getattr(_state, "deadline", None)
    clock = time.perf_counter
    for item in iterable:
        if deadline is not None and clock() > deadline:
            raise too_slow()
        yield item


@pass_context  # never evaluated at compile time (constant folding): it counts at render time
def _made(context: Any, value: Any) -> Any:
    """An output piece inside a loop or block: counted (as it will print) before it is kept."""
    made = getattr(_state, "made", 0) + len(value if isinstance(value, str) else str(value))
    _state.made = made
    if made > LIMITS.render_chars * MADE_FACTOR:
        raise too_long("what the template made in its loops and blocks", MADE_FACTOR)
    return value


def _sized(value: Any) -> Any:
    """Refuse a value no reply needs: a string longer than the limit, a list longer than range()'s cap, an
    integer of more than MAX_INT_BITS bits."""
    if isinstance(value, str):
        if len(value) > LIMITS.render_chars:
            raise too_long("a text the template made")
    elif isinstance(value, list | tuple):
        if len(value) > MAX_RANGE:
            raise RenderLimit(f"a list the template made has more than {MAX_RANGE:,} items")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise RenderLimit("a number the template made is too large")
    return value


def _expect(size: int, what: str = "a text the template made") -> None:
    if size > LIMITS.render_chars:
        raise too_long(what)


def _printf(fmt: str, args: Any) -> None:
    """`'%05d' % x` and `|format`: no width or precision past the limit."""
    values = args if isinstance(args, tuple) else (args,)
    for found in _PRINTF.finditer(fmt):
        for part in found.groups():
            if part == "*":
                if any(isinstance(v, int) and abs(v) > LIMITS.render_chars for v in values):
                    raise too_long()
            elif part is not None and int(part) > LIMITS.render_chars:
                raise too_long()


def _format_spec(fmt: str) -> None:
    """`'{:>99999}'.format(x)`: no width past the limit, no width taken from an argument."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and "{" in spec:
            raise RenderLimit("a format width taken from an argument is not allowed in templates")
        for number in re.findall(r"\d+", spec or ""):
            if int(number) > LIMITS.render_chars:
                raise too_long()


def _mul(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(times, int) and isinstance(seq, str | list | tuple):
            cap = LIMITS.render_chars if isinstance(seq, str) else MAX_RANGE
            if len(seq) * max(times, 0) > cap:
                raise too_long() if isinstance(seq, str) else RenderLimit(
                    f"a list the template made has more than {MAX_RANGE:,} items")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise RenderLimit("a number the template made is too large")


def _pow(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1 \
            and exponent * base.bit_length() > MAX_INT_BITS:
        raise RenderLimit("a number the template made is too large")


class BudgetedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox with the budget of this module."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.filters.update(kefu_loop=_loop, kefu_made=_made, kefu_sized=_sized)
        for name, check in FILTER_CHECKS.items():
            self.filters[name] = _checked(self.filters[name], check)
        self.globals["lipsum"] = _lipsum

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return bound(super()._parse(source, name, filename))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            _mul(left, right)
        elif operator == "**":
            _pow(left, right)
        elif operator == "%" and isinstance(left, str):
            _printf(left, right)
        return _sized(self.binop_table[operator](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is not None:
            _format_spec(value.__self__)
        return wrapper


def _str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of a string that can make one far longer than their arguments."""
    first = args[0] if args else None
    if name in ("ljust", "rjust", "center", "zfill") and isinstance(first, int):
        _expect(first)
    elif name == "expandtabs":
        _expect(len(text) + text.count("\t") * (first if isinstance(first, int) else kwargs.get("tabsize", 8)))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _expect(_replaced_size(text, args[0], args[1], args[2] if len(args) > 2 else None))
    elif name == "join" and first is not None:
        _expect(_joined_size(first, text))


def _replaced_size(text: str, old: str, new: str, count: Any) -> int:
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _joined_size(items: Any, separator: str) -> int:
    if isinstance(items, str):
        return len(items) + max(len(items) - 1, 0) * len(separator)
    if isinstance(items, list | tuple):
        return sum(len(str(item)) for item in items) + max(len(items) - 1, 0) * len(separator)
    return 0  # an iterator: made as it goes, and the result is checked


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_join(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    value = args[1] if len(args) > 1 else kwargs.get("value")
    if not isinstance(value, str | list | tuple) and value is not None and "value" not in kwargs:
        value = list(_loop(None, value))  # an iterator, made into the list the filter would make
        args = (args[0], value, *args[2:])
    separator = _arg(args, kwargs, 2, "d", "")
    if isinstance(value, str | list | tuple) and isinstance(separator, str):
        _expect(_joined_size(value, separator))
    return args


def _check_center(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    width = _arg(args, kwargs, 1, "width", 80)
    if isinstance(width, int):
        _expect(width)
    return args


def _check_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(_arg(args, kwargs, 0, "s", "")), _arg(args, kwargs, 1, "width", 4)
    each = width if isinstance(width, int) else len(str(width))
    _expect(len(text) + (text.count("\n") + 1) * max(each, 0))
    return args


def _check_format(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if args and isinstance(args[0], str):
        _printf(args[0], tuple(args[1:]) or tuple(kwargs.values()))
    return args


def _check_replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, old, new = (_arg(args, kwargs, i, n, None) for i, n in ((1, "s"), (2, "old"), (3, "new")))
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        _expect(_replaced_size(text, old, new, _arg(args, kwargs, 4, "count", None)))
    return args


def _check_wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(_arg(args, kwargs, 1, "s", "")), _arg(args, kwargs, 2, "width", 79)
    wrap = _arg(args, kwargs, 4, "wrapstring", None) or "\n"
    lines = len(text) // max(int(width) if isinstance(width, int) else 1, 1) + text.count("\n") + 1
    _expect(len(text) + lines * len(str(wrap)))
    return args


def _check_count(index: int, name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]:
    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        count = _arg(args, kwargs, index, name, 1)
        if isinstance(count, int) and count > MAX_RANGE:
            raise RenderLimit(f"'{name}' of more than {MAX_RANGE:,}")
        return args
    return check


def _check_sum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    start = _arg(args, kwargs, 3, "start", 0)
    if not isinstance(start, int | float):
        raise RenderLimit("sum adds numbers (its 'start' must be a number)")
    return args


FILTER_CHECKS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "join": _check_join, "center": _check_center, "indent": _check_indent, "format": _check_format,
    "replace": _check_replace, "wordwrap": _check_wordwrap, "slice": _check_count(2, "slices"),
    "batch": _check_count(1, "linecount"), "sum": _check_sum,
}


def _checked(original: Callable[..., Any], check: Callable[..., tuple[Any, ...]]) -> Callable[..., Any]:
    """The filter, its arguments checked first (as it is called: after its environment or context argument, when
    it takes one) and its result after."""

    @functools.wraps(original)
    def filter(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return _sized(original(*check(args, kwargs), **kwargs))

    return filter


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    _expect(n * max * 12)  # words of up to 12 characters with their space
    return generate_lorem_ipsum(n, html, min, max)


def bound(ast: nodes.Template) -> nodes.Template:
    """Put the budget into a template's tree: loops through kefu_loop, output inside loops and blocks through
    kefu_made, `~` through kefu_sized. A template without loops or blocks is left as it is."""
    for concat in list(ast.find_all(nodes.Concat)):
        concat.nodes = [nodes.Filter(nodes.Concat(concat.nodes, lineno=concat.lineno), "kefu_sized", [], [],
                                     None, None, lineno=concat.lineno)]
    for block in ast.find_all(_BUFFERED):
        for output in block.find_all(nodes.Output):
            output.nodes = [child if isinstance(child, nodes.Filter) and child.name == "kefu_made" else
                            nodes.Filter(nodes.Const(child.data, lineno=child.lineno) if isinstance(
                                child, nodes.TemplateData) else child, "kefu_made", [], [], None, None,
                                lineno=child.lineno) for child in output.nodes]
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "kefu_loop", [], [], None, None, lineno=loop.lineno)
    return ast


def heavy_loops(ast: nodes.Node, outer: int = 1) -> list[tuple[int, str]]:
    """(line, warning) for loops over range()s with constant counts that, nested, multiply past LARGE_LOOP.
    (Recursion through a module function: a nested one would leave a cycle for the collector at every load.)"""
    out: list[tuple[int, str]] = []
    for child in ast.iter_child_nodes():
        if not isinstance(child, nodes.For):
            out.extend(heavy_loops(child, outer))
            continue
        count = outer * _range_count(child.iter)
        if count > LARGE_LOOP and outer > 1:
            out.append((child.lineno, f"nested loops run about {count:,} times: the render stops after "
                                      f"{LIMITS.render_ms:g} ms (limits.render_ms), and the reply fails"))
        else:
            out.extend(heavy_loops(child, count))
    return out


def _range_count(node: nodes.Node) -> int:
    """How many items `range(…)` with constant arguments gives (through filters like |list); else 1."""
    while isinstance(node, nodes.Filter) and node.node is not None:
        node = node.node
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range":
        try:
            values = [arg.as_const() for arg in node.args]
            return min(len(range(*values)), MAX_RANGE)
        except Exception:  # not constant, or not a range
            return 1
    return 1
