"""Compiling Jinja templates once: parse once, check the names they use, generate code once — and reuse the
generated code across reloads for every template whose source did not change.

Most reply texts only put values into text ("您的订单 {{ match.order }} 已发货"). Those render without Jinja's
code (render.Text takes their `pieces`), so their code is generated only if it is ever needed (LazyTemplate):
generating code is most of what compiling a template costs, and a rule set of thousands of replies loads and
reloads faster without it.

A rule set's templates folder is served by `CompiledLoader`, which hands out templates compiled at load
time, so `{% include %}` at render time neither reads a file nor parses anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from jinja2 import BaseLoader, Environment, Template, TemplateNotFound, meta, nodes

# Names Jinja itself provides inside templates.
JINJA_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})


@dataclass(frozen=True, slots=True)
class Compiled:
    """What compiling one template source produced; independent of any environment."""

    code: CodeType | None  # None: not generated (a lazy inline template, see LazyTemplate)
    names: frozenset[str]  # the names it reads that it does not set itself
    includes: frozenset[str]  # the templates it includes, imports or extends (by literal name)
    pieces: Pieces | None = None  # when it only puts values into text: what to put where (see render.Text)
    name_lines: Mapping[str, int] = field(default_factory=dict)  # each of `names`: the first line it is on
    # the templates it cannot do without, with their line: one of the names (`include [a, b]` takes the first
    # that exists) must be there; `include … ignore missing` needs none
    required: tuple[tuple[tuple[str, ...], int], ...] = ()
    # `{{ hours.NAME }}`: each NAME with its line, for kefu check to find in bot.yaml's windows
    hours: tuple[tuple[str, int], ...] = ()


# The names every template sees.
CONTEXT_NAMES = ("message", "match", "vars", "now", "rule", "state", "hours")

Key = tuple[str | None, str]  # (template file name or None for an inline template, source)


class CompiledLoader(BaseLoader):
    """Serves the templates of one rule set, compiled at load time."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = dict(sources)
        self.templates: dict[str, Template | LazyTemplate] = {}

    def get_source(self, environment: Environment,
                   template: str) -> tuple[str, str | None, Callable[[], bool]]:
        if template not in self.sources:
            raise TemplateNotFound(template)
        return self.sources[template], None, lambda: True

    def load(self, environment: Environment, name: str, globals: Any = None) -> Template:
        try:
            return self.templates[name]  # type: ignore[return-value]  # a LazyTemplate acts as its Template
        except KeyError:
            raise TemplateNotFound(name) from None


class TemplateCompiler:
    """Compiles sources for one environment, reusing `previous` results (from the rule set being
    replaced) for unchanged sources. Raises jinja2's TemplateSyntaxError (and its TemplateAssertionError,
    e.g. for an unknown filter)."""

    def __init__(self, env: Environment, previous: Mapping[Key, Compiled] | None = None):
        self.env = env
        self.previous = previous or {}
        self.compiled: dict[Key, Compiled] = {}
        self.templates: list[Template | LazyTemplate] = []  # every one made: a retired rule set frees them
        # a plain dict, not make_globals' ChainMap: every render copies the globals into its context, and
        # iterating a ChainMap (in Python) cost more than the rest of rendering a short reply
        self._globals = dict(env.make_globals(None))

    def compile(self, source: str, name: str | None = None) -> tuple[Template | LazyTemplate, Compiled]:
        """A template file (`name`) or an inline template (a rule's reply text). An inline template that only
        substitutes values comes back as a LazyTemplate; any other as a jinja2 Template."""
        key = (name, source)
        compiled = self.compiled.get(key) or self.previous.get(key)
        if compiled is None:
            ast = self.env.parse(source, name=name)
            pieces = substitutions(ast)
            lazy = pieces is not None and name is None  # files stay real: `{% include %}` loads them
            names = _free_names(ast)
            compiled = Compiled(
                code=None if lazy else self.env.compile(ast, name=name, filename=name),
                names=names,
                includes=frozenset(r for r in meta.find_referenced_templates(ast) if r is not None),
                pieces=pieces,
                name_lines=_first_lines(ast, names),
                required=_required(ast),
                hours=tuple((node.attr, node.lineno) for node in ast.find_all(nodes.Getattr)
                            if isinstance(node.node, nodes.Name) and node.node.name == "hours"),
            )
        self.compiled[key] = compiled
        template: Template | LazyTemplate
        if compiled.code is None:
            template = LazyTemplate(self.env, source, self._globals)
        else:
            template = self.env.template_class.from_code(self.env, compiled.code, self._globals, None)
        self.templates.append(template)
        return template, compiled


class LazyTemplate:
    """An inline template that only substitutes values, its Jinja code generated on first need. Rendering
    takes the substitution path (render.Text); Jinja's own code runs only to raise an error in its words (an
    undefined value, an unsafe attribute), which is when this generates it — once."""

    __slots__ = ("environment", "_source", "_globals", "_template")

    def __init__(self, env: Environment, source: str, globals: dict[str, Any]):
        self.environment = env
        self._source = source
        self._globals = globals
        self._template: Template | None = None

    def real(self) -> Template:
        if self._template is None:
            code = self.environment.compile(self._source)
            self._template = self.environment.template_class.from_code(self.environment, code, self._globals,
                                                                       None)
        return self._template

    @property
    def root_render_func(self) -> Callable[..., Any]:
        return self.real().root_render_func

    def new_context(self, vars: dict[str, Any] | None = None) -> Any:
        return self.real().new_context(vars)

    def render(self, *args: Any, **kwargs: Any) -> str:
        return self.real().render(*args, **kwargs)


def release(templates: list[Template | LazyTemplate] | tuple[Template | LazyTemplate, ...]) -> None:
    """Break the reference cycles of compiled templates (each template's functions and its namespace refer
    to each other), so that reference counting frees them without the cycle collector: a full collection
    over a large rule set would stall the event loop. The templates cannot render afterwards."""
    for template in templates:
        if isinstance(template, LazyTemplate):
            if template._template is None:  # noqa: SLF001 - never generated: nothing to break
                continue
            template = template._template  # noqa: SLF001
        template.root_render_func.__globals__.clear()
        template.blocks.clear()
        loader = template.environment.loader
        if isinstance(loader, CompiledLoader):
            loader.templates.clear()


Pieces = tuple[str | tuple[str, ...], ...]  # text, or (name, attribute, attribute, …) to look up and print


def substitutions(ast: nodes.Template) -> Pieces | None:
    """The template as text and `{{ name.attr.attr }}` lookups, when that is all it is (the usual reply:
    "您的订单 {{ match.order }} 已发货"); None for anything else (filters, tags, calls, subscripts, …). The
    names must be the context's own (message, match, vars, …), not Jinja's globals."""
    pieces: list[str | tuple[str, ...]] = []
    for output in ast.body:
        if not isinstance(output, nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                pieces.append(node.data)
                continue
            attrs: list[str] = []
            while isinstance(node, nodes.Getattr):
                attrs.append(node.attr)
                node = node.node
            if not isinstance(node, nodes.Name) or node.ctx != "load" or node.name not in SUBSTITUTABLE:
                return None
            pieces.append((node.name, *reversed(attrs)))
    return tuple(pieces)


SUBSTITUTABLE = frozenset(CONTEXT_NAMES)


def _free_names(ast: nodes.Template) -> frozenset[str]:
    """Names a template reads but never sets: a cheap walk, where jinja2.meta would generate code."""
    loaded: set[str] = set()
    stored: set[str] = set()
    for node in ast.find_all(nodes.Name):
        (loaded if node.ctx == "load" else stored).add(node.name)
    for macro in ast.find_all(nodes.Macro):  # {% macro m() %}
        stored.add(macro.name)
    for import_ in ast.find_all(nodes.Import):  # {% import 'x.j2' as x %}
        stored.add(import_.target)
    for from_import in ast.find_all(nodes.FromImport):  # {% from 'x.j2' import a, b as c %}
        stored.update(n if isinstance(n, str) else n[1] for n in from_import.names)
    return frozenset(loaded - stored - JINJA_NAMES)


def _first_lines(ast: nodes.Template, names: frozenset[str]) -> dict[str, int]:
    """The line (of the template's source) where each name is first read."""
    out: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in names and node.ctx == "load":
            out[node.name] = min(out.get(node.name, node.lineno), node.lineno)
    return out


def _required(ast: nodes.Template) -> tuple[tuple[tuple[str, ...], int], ...]:
    """The templates named by literal in include, import, from-import and extends, with their line; an
    `include … ignore missing` requires nothing, a list requires one of its names."""
    out = []
    for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        if isinstance(node, nodes.Include) and node.ignore_missing:
            continue
        target = getattr(node, "template", None)  # every kind found above has one
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            out.append(((target.value,), node.lineno))
        elif isinstance(target, nodes.List | nodes.Tuple) and target.items and all(
                isinstance(item, nodes.Const) and isinstance(item.value, str) for item in target.items):
            out.append((tuple(item.value for item in target.items), node.lineno))  # type: ignore[attr-defined]
    return tuple(out)
