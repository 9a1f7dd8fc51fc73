"""The span crop of the Keras shared-reference engine (``deeplift_keras_crop``): inside the span the scores
are the full engine's, outside they are 0, summation-to-delta holds at the chain's top (warnings are errors);
models whose bottom is not a chain of local layers ignore the span."""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from test_deeplift_shared import assert_close, inputs  # noqa: E402

from kipoi_dfim.backend import load_model  # noqa: E402
from kipoi_dfim.backend.deeplift_keras_shared import _shared_engine, deeplift_shared_keras  # noqa: E402

L = 192
SPANS = [(90, 101), (0, 9), (180, 192)]
lay = keras.layers


def basset_like() -> keras.Model:
    """Sequential conv/relu/pool x3, Flatten, Dense relu, Dense (the benchmark's shape, small)."""
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((L, 4)),
        lay.Conv1D(8, 7, activation="relu"), lay.MaxPooling1D(2),
        lay.Conv1D(8, 5, activation="relu"), lay.MaxPooling1D(3),
        lay.Conv1D(6, 3, activation="relu"), lay.MaxPooling1D(2),
        lay.Flatten(), lay.Dense(16, activation="relu"), lay.Dense(2),
    ])


def same_bn_dropout() -> keras.Model:
    """"same" convolutions, batch norm (non-trivial statistics), dropout, a separate tanh Activation layer
    before an unfused pool, ending in a global max-pool (the chain stops below the last relu)."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((L, 4)),
        lay.Conv1D(8, 5, padding="same"), lay.BatchNormalization(), lay.Activation("tanh"), lay.MaxPooling1D(2),
        lay.Dropout(0.3),
        lay.Conv1D(8, 4, padding="same", activation="relu"), lay.MaxPooling1D(4),
        lay.Conv1D(6, 3, activation="relu"), lay.GlobalMaxPooling1D(), lay.Dense(2),
    ])
    bn = model.layers[1]
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model


def nested() -> keras.Model:
    """A functional model wrapping a functional model (as model_specs/sim_keras is loaded and scored)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((L, 4))
    h = lay.MaxPooling1D(4)(lay.Conv1D(8, 9, activation="relu")(inp))
    h = lay.MaxPooling1D(4)(lay.Conv1D(8, 5, activation="relu")(h))
    inner = keras.Model(inp, lay.Dense(2)(lay.Flatten()(h)), name="inner")
    outer_in = keras.Input((L, 4))
    return keras.Model(outer_in, inner(outer_in))


def conv2d_bottom() -> keras.Model:
    """A Conv2D at the bottom: no chain, the span is ignored."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((L, 4))
    h = lay.Reshape((L, 4, 1))(inp)
    h = lay.Conv2D(4, (5, 4), activation="relu")(h)
    return keras.Model(inp, lay.Dense(2)(lay.Flatten()(h)))


def branch_bottom() -> keras.Model:
    """Two convolutions reading the input: no chain, the span is ignored."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((L, 4))
    h = lay.Add()([lay.Conv1D(4, 5, activation="relu")(inp), lay.Conv1D(4, 5)(inp)])
    return keras.Model(inp, lay.Dense(2)(lay.Flatten()(lay.MaxPooling1D(2)(h))))


def check_cropped(full: np.ndarray, cropped: np.ndarray, span: tuple[int, int]) -> None:
    a, b = span
    scale = np.abs(full).max()
    np.testing.assert_allclose(cropped[..., a:b, :], full[..., a:b, :], rtol=0, atol=1e-5 * scale)
    assert not cropped[..., :a, :].any() and not cropped[..., b:, :].any()


@pytest.mark.parametrize("build", [basset_like, same_bn_dropout, nested])
def test_crop_equals_full_inside_span(build):
    model = build()
    x, refs = inputs(2, 3, 0, length=L)
    full = deeplift_shared_keras(model, x, refs, [0, 1], batch_size=8)
    engine = _shared_engine(model, (L, 4))
    assert engine.chain is not None
    for span in SPANS:
        assert engine.plan(span) is not None  # the cropped path runs
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # summation-to-delta at the chain's top
            cropped = deeplift_shared_keras(model, x, refs, [0, 1], batch_size=8, span=span)
        check_cropped(full, cropped, span)


def test_chain_stops_below_a_fused_relu():
    """same_bn_dropout ends relu -> global max-pool: the chain's top is the last conv's input."""
    model = same_bn_dropout()
    chain = _shared_engine(model, (L, 4)).chain
    assert chain.last is model.layers[6]
    assert [s.kind for s in chain.steps] == ["same", "point", "point", "pool", "point", "same", "pool"]


@pytest.mark.parametrize("build", [conv2d_bottom, branch_bottom])
def test_span_ignored_without_chain(build):
    model = build()
    x, refs = inputs(2, 2, 1, length=L)
    assert _shared_engine(model, (L, 4)).chain is None
    full = deeplift_shared_keras(model, x, refs, [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spanned = deeplift_shared_keras(model, x, refs, [0, 1], span=(90, 101))
    np.testing.assert_array_equal(spanned, full)


def test_whole_span_is_the_full_pass():
    model = basset_like()
    assert _shared_engine(model, (L, 4)).plan((0, L)) is None


def test_through_the_adapter():
    net = basset_like()
    model = load_model(net, seq_len=L)
    x, refs = inputs(3, 2, 2, length=L)
    full = model.deeplift_shared(x, refs, [0, 1])
    for span in [(90, 101), (0, 9)]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cropped = model.deeplift_shared(x, refs, [0, 1], span=span)
        check_cropped(full, cropped, span)
    assert_close(full, deeplift_shared_keras(model._scored(model.output), x, refs, [0, 1]))


def test_full_pass_relu_into_global_max_pool_matches_pairwise():
    """relu -> GlobalMaxPooling1D (fused; the pool drops the length axis) in the shared engine equals the
    pairwise engine."""
    from kipoi_dfim.backend.common import hypothetical_scores
    from kipoi_dfim.backend.deeplift_keras import deeplift_multipliers_keras

    model = same_bn_dropout()
    x, refs = inputs(2, 2, 3, length=L)
    fast = deeplift_shared_keras(model, x, refs, [1])
    for w in range(2):
        slow = hypothetical_scores(deeplift_multipliers_keras(model, x[:, w], refs, 1), refs)
        assert_close(fast[:, w, 0], slow)
