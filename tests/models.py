"""Small models of every supported kind, each with a reference penultimate-feature function and
the flattened layout of its last kernel gradient ("dc": kernel D × C, "cd": kernel C × D)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

IN, HID, C = 6, 12, 4


def plain_mlp(key):
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"w1": jax.random.normal(k1, (IN, HID)) / 2, "b1": jnp.zeros(HID),
              "w2": jax.random.normal(k2, (HID, C)), "b2": jax.random.normal(k3, (C,))}

    def features(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"])

    def apply_fn(p, x):
        return features(p, x) @ p["w2"] + p["b2"]

    return params, apply_fn, features, "dc", (IN,)


def linen_mlp(key):
    import flax.linen as nn

    class MLP(nn.Module):
        def setup(self):
            self.hidden = nn.Dense(HID)
            self.out = nn.Dense(C)

        def features(self, x):
            return nn.relu(self.hidden(x))

        def __call__(self, x):
            return self.out(self.features(x))

    model = MLP()
    params = model.init(key, jnp.ones((1, IN)))
    return params, model.apply, lambda p, x: model.apply(p, x, method=MLP.features), "dc", (IN,)


def linen_cnn(key):
    import flax.linen as nn

    class CNN(nn.Module):
        def setup(self):
            self.conv = nn.Conv(4, (3, 3))
            self.hidden = nn.Dense(HID)
            self.out = nn.Dense(C)

        def features(self, x):
            x = nn.relu(self.conv(x))
            x = x.reshape(x.shape[0], -1)
            return nn.relu(self.hidden(x))

        def __call__(self, x):
            return self.out(self.features(x))

    model = CNN()
    params = model.init(key, jnp.ones((1, 5, 5, 1)))
    return params, model.apply, lambda p, x: model.apply(p, x, method=CNN.features), "dc", (5, 5, 1)


def nnx_mlp(key):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(IN, HID, rngs=rngs)
            self.out = nnx.Linear(HID, C, rngs=rngs)

        def features(self, x):
            return nnx.relu(self.hidden(x))

        def __call__(self, x):
            return self.out(self.features(x))

    graphdef, state = nnx.split(Net(nnx.Rngs(int(jax.random.randint(key, (), 0, 1000)))))

    def apply_fn(state, x):
        return nnx.merge(graphdef, state)(x)

    def features(state, x):
        return nnx.merge(graphdef, state).features(x)

    return state, apply_fn, features, "dc", (IN,)


def equinox_mlp(key):
    import equinox as eqx

    model = eqx.nn.MLP(IN, C, HID, depth=2, activation=jax.nn.gelu, key=key)
    params, static = eqx.partition(model, eqx.is_array)

    def apply_fn(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    def features(p, x):
        m = eqx.combine(p, static)

        def one(v):
            for layer in m.layers[:-1]:
                v = m.activation(layer(v))
            return v

        return jax.vmap(one)(x)

    return params, apply_fn, features, "cd", (IN,)


MODEL_KINDS = {
    "plain": plain_mlp,
    "linen_mlp": linen_mlp,
    "linen_cnn": linen_cnn,
    "nnx": nnx_mlp,
    "equinox": equinox_mlp,
}


def tiny_bert(tmp_path, **config):
    """A one-layer BERT sequence classifier (2 labels, 16 features) and its tokenizer over a
    nine-word vocabulary written to ``tmp_path``, seeded; ``config``: more ``BertConfig`` fields.
    Needs torch and transformers (import-skip them in the test first)."""
    import torch
    import transformers as hf

    words = "the a movie good bad plot was not fun".split()
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))
    tok = hf.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    model = hf.BertForSequenceClassification(hf.BertConfig(
        vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=2, max_position_embeddings=32, **config))
    return model, tok
