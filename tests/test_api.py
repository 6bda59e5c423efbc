"""The public API: one calling convention (docs/api.md), a docstring with a runnable example on
every public name, doctests collected from every module, and the signature table in the docs.

Run ``python tests/test_api.py`` to rewrite the signature table of ``docs/api.md``.
"""

import doctest
import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

import aljax

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"



def _by_leading(names):
    """The public functions of aljax whose positional arguments start with ``names``."""
    out = []
    for name in aljax.__all__:
        obj = getattr(aljax, name)
        if inspect.isfunction(obj):
            positional = [p.name for p in inspect.signature(obj).parameters.values()
                          if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
            if positional[:len(names)] == names:
                out.append(name)
    return out


# Found by their signatures, so that a new strategy is checked without being added here; every
# public function must be one of these kinds (test_every_public_function_is_of_a_known_kind).
SELECTORS = _by_leading(["embedding", "k"])
# Draws on a score vector, in jax.random's argument order (key first).
SCORE_SELECTORS = _by_leading(["key", "scores", "k"])
FRONT_DOORS = _by_leading(["params", "apply_fn", "pool", "k"])
EMBEDDINGS = sorted(set(_by_leading(["params", "apply_fn", "pool"])) - set(FRONT_DOORS))
# Embedding in, a clustering out (Cluster-Margin's, computed once): (embedding, *, threshold, key=0, ...).
CLUSTERINGS = sorted(set(_by_leading(["embedding"])) - set(SELECTORS))
HARNESS = ["curve_area", "plot_learning_curves", "relative_auc", "simulate"]
HOSTS = ["global_pool", "local_indices"]   # pools spread over several processes
# The keywords that mean the same thing everywhere, and their one default.
SHARED_DEFAULTS = {"key": 0, "labeled": None, "batch_size": 256, "features_fn": None,
                   "problem_type": "classification", "device": None, "head": None, "max_length": None,
                   "progress": None}
# Defaults that are the algorithm's own (its paper's), the same in every entry point of it.
ALGORITHM_DEFAULTS = {
    "bait": {"lamb": 1.0, "oversample": 2.0},
    "vessal": {"lamb": 0.01, "rank": 1, "rate": None, "precompute_covariance": False},
    "badge": {"prune": False},
    "bald": {"mc_samples": 20, "stochastic": None, "beta": 1.0},
    "batch_bald": {"mc_samples": 20, "configurations": 10_000},
    "margin": {"stochastic": None, "beta": 1.0},
    "entropy": {"stochastic": None, "beta": 1.0},
    "least_confidence": {"stochastic": None, "beta": 1.0},
}
SELECTOR_OF = {"bait": "fisher_greedy", "vessal": "volume_stream", "badge": "kmeans_pp", "coreset": "k_center_greedy",
               "batch_bald": "mutual_information_greedy"}


def _torch_adapter():
    pytest.importorskip("torch")
    return importlib.import_module("aljax.torch_adapter")


def _public_objects():
    """(qualified name, object) for every public name of aljax, aljax.scores and (when torch is
    installed) aljax.torch_adapter, aljax.stopping, and the public methods of public classes."""
    spaces = [("aljax", aljax), ("aljax.scores", aljax.scores), ("aljax.stopping", aljax.stopping)]
    try:
        import torch  # noqa: F401  (present or not decides the namespaces)
        spaces.append(("aljax.torch_adapter", importlib.import_module("aljax.torch_adapter")))
    except ImportError:
        pass
    out = []
    for prefix, space in spaces:
        for name in space.__all__:
            obj = getattr(space, name)
            out.append((f"{prefix}.{name}", obj))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and attr not in ("tree_flatten", "tree_unflatten") and (inspect.isfunction(member) or isinstance(member, property)):
                        out.append((f"{prefix}.{name}.{attr}", member))
    return out


# ---------------------------------------------------------------- docstrings and doctests


@pytest.mark.parametrize("name, obj", _public_objects(), ids=[n for n, _ in _public_objects()])
def test_every_public_name_has_a_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    if inspect.ismodule(obj) or isinstance(obj, property):
        return
    assert ">>>" in doc, f"{name}'s docstring has no runnable example"


def _all_modules():
    names = ["aljax"]
    for info in pkgutil.walk_packages(aljax.__path__, "aljax."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _all_modules())
def test_docstring_examples_run(name):
    if name.startswith("aljax.torch_adapter"):
        pytest.importorskip("torch")
    if name == "aljax._plot":
        pytest.importorskip("matplotlib")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        if test.name.split(".")[-1].startswith("_") and test.name != name:
            continue  # private helpers may carry examples, but need not
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (see the output above)"


def test_every_module_with_public_functions_is_collected():
    """Doctests come from walking the package, not from a hand-kept list: every module that
    defines a public name is among the collected ones."""
    collected = set(_all_modules())
    for _, obj in _public_objects():
        module = getattr(obj, "__module__", None)
        if module and module.startswith("aljax"):
            assert module in collected, module


# ---------------------------------------------------------------- one calling convention


def _params(fn):
    return inspect.signature(fn).parameters


def test_every_public_function_is_of_a_known_kind():
    functions = {n for n in aljax.__all__ if inspect.isfunction(getattr(aljax, n))}
    assert functions == (set(SELECTORS) | set(SCORE_SELECTORS) | set(FRONT_DOORS) | set(EMBEDDINGS) | set(HARNESS)
                         | set(CLUSTERINGS) | set(HOSTS)), \
        "a public function follows neither convention of docs/api.md"
    assert {"kmeans_pp", "fisher_greedy", "volume_stream", "k_center_greedy"} <= set(SELECTORS)
    assert SCORE_SELECTORS == ["stochastic_top_k"]
    assert {"badge", "bait", "vessal", "coreset", "margin", "bald", "random_sample"} <= set(FRONT_DOORS)


@pytest.mark.parametrize("name", SELECTORS)
def test_selectors_take_embedding_then_k_then_keywords(name):
    params = _params(getattr(aljax, name))
    positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == ["embedding", "k"], positional
    assert params["key"].kind is inspect.Parameter.KEYWORD_ONLY and params["key"].default == 0
    if "labeled" in params:
        assert params["labeled"].default is None


@pytest.mark.parametrize("name", SCORE_SELECTORS)
def test_score_selectors_take_key_scores_k_then_keywords(name):
    params = _params(getattr(aljax, name))
    positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == ["key", "scores", "k"], positional
    for p in list(params.values())[3:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p.name} is not keyword-only"


def test_stochastic_options_are_the_same_in_every_score_based_entry_point():
    """``stochastic`` and ``beta``: the same names and defaults wherever a score is drawn from, and
    ``beta`` means ``stochastic_top_k``'s ``beta``."""
    assert _params(aljax.stochastic_top_k)["beta"].default == 1.0
    params = _params(aljax.ActiveSampler)
    assert params["stochastic"].default is None and params["beta"].default == 1.0


@pytest.mark.parametrize("name", FRONT_DOORS)
def test_front_doors_take_params_apply_fn_pool_k_then_keywords(name):
    params = _params(getattr(aljax, name))
    positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == ["params", "apply_fn", "pool", "k"], positional
    for p in list(params.values())[4:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p.name} is not keyword-only"
    assert "key" in params and "batch_size" in params and "problem_type" in params and "progress" in params


@pytest.mark.parametrize("name", SELECTORS + FRONT_DOORS + EMBEDDINGS)
def test_shared_keywords_have_one_default(name):
    for arg, p in _params(getattr(aljax, name)).items():
        if arg in SHARED_DEFAULTS:
            assert p.default == SHARED_DEFAULTS[arg], f"aljax.{name}({arg}={p.default!r})"


@pytest.mark.parametrize("algorithm", sorted(ALGORITHM_DEFAULTS))
def test_algorithm_defaults_are_the_same_in_every_entry_point(algorithm):
    entries = [getattr(aljax, algorithm)]
    if algorithm in SELECTOR_OF:
        entries.append(getattr(aljax, SELECTOR_OF[algorithm]))
    try:
        import torch  # noqa: F401  (present or not decides the namespaces)
        entries.append(getattr(importlib.import_module("aljax.torch_adapter"), algorithm))
    except ImportError:
        pass
    for arg, default in ALGORITHM_DEFAULTS[algorithm].items():
        for fn in entries:
            params = _params(fn)
            if arg == "rank" and fn is aljax.volume_stream:
                continue  # None: as the embedding gives it (dense rows), 1 for FisherFactors
            if arg in params:
                assert params[arg].default == default, f"{fn.__module__}.{fn.__name__}({arg}={params[arg].default!r})"
    assert "lamb" not in ALGORITHM_DEFAULTS[algorithm] or \
        _params(aljax.ActiveSampler)["lamb"].default is None  # None: each algorithm's own


@pytest.mark.parametrize("name", FRONT_DOORS + EMBEDDINGS)
def test_torch_mirrors_have_the_same_keywords_and_defaults(name):
    ta = _torch_adapter()
    jax_params, torch_params = _params(getattr(aljax, name)), _params(getattr(ta, name))
    positional = [p.name for p in torch_params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == ["model", "pool"] + (["k"] if name in FRONT_DOORS else []), positional
    jax_only = {"params", "apply_fn", "pool", "k", "features_fn", "length", "project_to"}
    for arg, p in jax_params.items():
        if arg in jax_only:
            continue
        assert arg in torch_params, f"torch_adapter.{name} lacks `{arg}`"
        assert torch_params[arg].default == p.default, f"torch_adapter.{name}({arg}={torch_params[arg].default!r})"
        assert torch_params[arg].kind is inspect.Parameter.KEYWORD_ONLY
    extra = set(torch_params) - set(jax_params) - {"model", "device", "head", "max_length"}
    assert not extra, f"torch_adapter.{name} has keywords the JAX front door lacks: {sorted(extra)}"


def test_active_sampler_passes_the_same_keywords():
    params = _params(aljax.ActiveSampler)
    positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == ["problem_type", "model", "budget", "labeled_data"]
    for arg in ("key", "batch_size", "features_fn", "device", "head", "max_length", "progress"):
        assert params[arg].default == SHARED_DEFAULTS[arg], arg
    for arg in ("oversample", "rank", "precompute_covariance", "prune", "stochastic", "beta"):
        owner = next(a for a, d in ALGORITHM_DEFAULTS.items() if arg in d)
        assert params[arg].default == ALGORITHM_DEFAULTS[owner][arg], arg


# ---------------------------------------------------------------- the signature table


def _signature_rows():
    rows = []
    entries = [("aljax", n) for n in SELECTORS + SCORE_SELECTORS + FRONT_DOORS + EMBEDDINGS]
    entries += [("aljax", n) for n in ["ActiveSampler", "Factored", "FisherFactors", "LabelPool"] + HARNESS + HOSTS]
    entries += [("aljax.scores", n) for n in aljax.scores.__all__]
    entries += [("aljax.stopping", n) for n in aljax.stopping.__all__]
    spaces = {"aljax": aljax, "aljax.scores": aljax.scores, "aljax.stopping": aljax.stopping}
    try:
        import torch  # noqa: F401  (present or not decides the namespaces)
        ta = importlib.import_module("aljax.torch_adapter")
        spaces["aljax.torch_adapter"] = ta
        entries += [("aljax.torch_adapter", n) for n in ta.__all__]
    except ImportError:
        pass
    for space, name in entries:
        obj = getattr(spaces[space], name)
        if not callable(obj):
            continue
        sig = inspect.signature(obj)
        sig = sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
                          return_annotation=inspect.Signature.empty)
        sig = str(sig).replace("|", "\\|")
        rows.append(f"| `{space}.{name}` | `{sig}` |")
    return rows


def _table() -> str:
    return "\n".join(["| function | signature |", "|---|---|", *_signature_rows()])


BEGIN, END = "<!-- signature table: generated by `python tests/test_api.py` -->", "<!-- end of signature table -->"


def test_docs_signature_table_is_current():
    _torch_adapter()  # the table lists the torch mirrors too
    text = API_DOC.read_text()
    assert BEGIN in text and END in text, "docs/api.md lacks the generated signature table"
    current = text.split(BEGIN)[1].split(END)[0].strip()
    assert current == _table(), "docs/api.md's signature table is stale: run `python tests/test_api.py`"


if __name__ == "__main__":
    text = API_DOC.read_text()
    block = f"{BEGIN}\n{_table()}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Every public function\n\n" + block + "\n"
    API_DOC.write_text(text)
    print(f"wrote {len(_signature_rows())} rows to {API_DOC}")
