"""Sphinx extension: every public name is documented, with a docstring, in the API reference.

For each module of ``aljax_public_modules`` (conf.py), every name of its ``__all__`` (and every
public method and property of a public class) must

* have a docstring, and
* be described by an object directive (``autofunction``, ``autoclass``, ``automodule``, ...) on a
  page under ``aljax_reference_dir``.

Each failure is a Sphinx warning, so ``bash docs/build`` (``-W``) fails on it. The check runs once
all pages are read (``env-check-consistency``), so it sees the whole reference whatever order the
pages are read in.
"""

from __future__ import annotations

import importlib
import inspect

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


def setup(app):
    app.add_config_value("aljax_public_modules", [], "env")
    app.add_config_value("aljax_reference_dir", "reference", "env")
    app.connect("env-check-consistency", check_coverage)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
