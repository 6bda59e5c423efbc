"""Sphinx extension: every public name is documented, with a docstring, in the API reference.

For each module of ``aljax_public_modules`` (conf.py), every name of its ``__all__`` (and every
public method and property of a public class) must

* have a docstring, and
* be described by an object directive (``autofunction``, ``autoclass``, ``automodule``, ...) on a
  page under ``aljax_reference_dir``.

Each failure is a Sphinx warning, so ``bash docs/build`` (``-W``) fails on it. The check runs once
all pages are read (``env-check-consistency``), so it sees the whole reference whatever order the
pages are read in.

It also catches a Google-style docstring that napoleon silently misreads: the text before the
first colon of a ``Returns:`` section's first line (or of a property's first line) becomes the
*type*, so "int32 indices into the pool: ..." renders as a return type "int32 indices into the
pool" and a description that starts mid-sentence. A type is a dotted name, possibly with
brackets, ``|``, commas, "or" and "of"; anything else there is a warning.
"""

from __future__ import annotations

import importlib
import inspect
import re

from sphinx.util import logging

logger = logging.getLogger(__name__)

# Methods every registered pytree class carries; they are JAX's protocol, not aljax's API.
_PROTOCOL_METHODS = {"tree_flatten", "tree_unflatten"}


def public_names(module_name: str):
    """``(qualified name, object)`` for the public names of a module and of its public classes.

    Raises ImportError if the module cannot be imported (reported as a warning by the caller).
    """
    module = importlib.import_module(module_name)
    out = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        qualified = f"{module_name}.{name}"
        out.append((qualified, obj))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or attr in _PROTOCOL_METHODS:
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    out.append((f"{qualified}.{attr}", member))
    return out


def _documented(env):
    """Qualified name -> docname of every Python object described in the project."""
    return {name: entry.docname for name, entry in env.get_domain("py").objects.items()}


def check_coverage(app, env):
    reference = app.config.aljax_reference_dir.rstrip("/") + "/"
    documented = _documented(env)
    for module_name in app.config.aljax_public_modules:
        try:
            names = public_names(module_name)
        except Exception as err:  # noqa: BLE001 - any import failure is a documentation failure
            logger.warning(f"aljax-coverage: cannot import {module_name} to check its public names: {err}",
                           type="aljax", subtype="coverage")
            continue
        for qualified, obj in names:
            if not inspect.getdoc(obj):
                logger.warning(f"aljax-coverage: public name {qualified} has no docstring",
                               type="aljax", subtype="docstring")
            docname = documented.get(qualified)
            if docname is None:
                logger.warning(f"aljax-coverage: public name {qualified} is not documented in the API "
                               f"reference (add it to a page under docs/{reference})",
                               type="aljax", subtype="coverage")
            elif not docname.startswith(reference):
                logger.warning(f"aljax-coverage: public name {qualified} is documented in {docname}, "
                               f"outside the API reference (docs/{reference})",
                               type="aljax", subtype="coverage", location=docname)


_TYPE_WORD = re.compile(r"^~?[A-Za-z_][\w.]*$")


def looks_like_a_type(text: str) -> bool:
    """Whether ``text`` (a ``:rtype:`` or ``:type:`` that napoleon wrote) can be a type."""
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text.strip())    # :class:`~x.Y` -> x.Y
    text = text.replace("``", "")
    while re.search(r"[\[(][^\[\]()]*[\])]", text):             # innermost brackets first
        text = re.sub(r"[\[(][^\[\]()]*[\])]", "", text)
    words = [w for w in re.split(r"\s*(?:\||,|\bor\b|\bof\b)\s*", text) if w]
    return bool(words) and all(_TYPE_WORD.match(w) for w in words)


def check_napoleon_types(app, what, name, obj, options, lines):
    """After napoleon (priority 500): warn on a ``:rtype:``/``:type:`` that is prose, not a type."""
    if not name.startswith(tuple(app.config.aljax_public_modules)):
        return
    for line in lines:
        match = re.match(r"^\s*:(rtype|type)(?: \w+)?: (.*)$", line)
        if match and not looks_like_a_type(match.group(2)):
            logger.warning(f"aljax-coverage: napoleon read prose as a type in the docstring of {name}: "
                           f"{match.group(2)!r} (the text before the first colon of a Returns section "
                           f"or of a property's first line; reword it without a colon)",
                           type="aljax", subtype="napoleon")


def setup(app):
    app.add_config_value("aljax_public_modules", [], "env")
    app.add_config_value("aljax_reference_dir", "reference", "env")
    app.connect("env-check-consistency", check_coverage)
    app.connect("autodoc-process-docstring", check_napoleon_types, priority=600)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
