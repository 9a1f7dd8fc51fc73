"""DFIM DeepLIFT throughput against a bare gradient and peer tools, on the same pairs, in one process.

Usage::

    python benchmarks/bench_peers.py [--quick] [--variants 12] [--refs 10] [--batch-size 64] [--threads 2]
        [--repeats 3] [--device auto] [--skip-keras] [--skip-torch] [--skip-gradients] [--grad-variants 32]
        [--ig-variants 2] [--grad-targets 4] [--steps 50] [--zoo-basset] [--openmp-default]

What is timed (every method on the SAME (window, reference) pairs; the methods are interleaved in each of
``--repeats`` rounds and the fastest round of each is kept, so a busy machine slows all of them alike):

N variants, K = 2 windows each (the reference window and the alternate window, one base apart in the
middle), R dinucleotide-shuffled references per variant shared by its two windows, one target: N * K * R
(window, reference) pairs.

PyTorch, a Basset-shaped network with random weights (600 bp; conv 300x19 / maxpool 3, conv 200x11 /
maxpool 4, conv 200x7 / maxpool 4, dense 1000, dense 1000, 164 outputs; the logit is explained):

- ``bare fwd+bwd``: autograd gradient of the target logit w.r.t. the input, one model row per pair, in
  batches of ``--batch-size`` (what a plain saliency pass over the pairs costs);
- ``kipoi-dfim shared``: ``model.deeplift_shared(x, refs, [t])`` (references shared by the two windows,
  hypothetical scores at every position, summation-to-delta checked for every pair);
- ``kipoi-dfim shared, DFIM span``: the same call with the ``span`` a score-variants run passes (the +-15 bp
  targets widened to the maps file's +-50 bp around the variant: 101 of 600 positions): the backward pass
  below the dense layers is cropped to what reaches those positions (``deeplift_torch_crop``); the scores
  there are the same, summation-to-delta is checked for every pair at the crop's top layer. This is what
  DFIM DeepLIFT costs in score-variants;
- ``kipoi-dfim pairwise``: the generic path of the same call (``AdapterBase._deeplift_shared``: every
  window against every reference in a paired batch, as ``model.deeplift`` did before the shared engine);
- ``tangermeme deep_lift_shap``: the 2N windows with their variant's references (hypothetical), same batch;
- ``captum DeepLiftShap``: one call per variant (captum shares one baseline set across a call's inputs).

``--zoo-basset``: the same rows on the zoo's Basset as kipoi/models ships it (the harness fixture of
scripts/zoo: a torch7-converted nn.Sequential whose reshapes are ``Lambda`` modules torch.fx cannot trace,
(4, 600, 1) input, batch norm; random weights), loaded from its model directory; the bare pass and the
peers get it behind an unsqueeze to (4, L, 1).

Keras 3 (TensorFlow), the same architecture (channels last):

- ``bare tf.GradientTape``: a tf.function gradient of the target logit, one row per pair, same batches;
- ``kipoi-dfim shared`` / ``kipoi-dfim pairwise`` as above with the Keras engine;
- ``shap DeepExplainer``: every window with its variant's references as background (shap explains one
  sample at a time).

grad_input and integrated gradients (PyTorch, ``--grad-targets`` targets, skipped with ``--skip-gradients``):
the 2 x ``--grad-variants`` windows (grad_input) and the 2 x ``--ig-variants`` windows x ``--steps`` path
points from a zero baseline (IG) as

- ``bare fwd+bwd``: an autograd pass per target over the same rows, batches of ``--batch-size``;
- ``before``: the code before this release (one ``model.gradient`` pass per target; IG in calls holding the
  path points of ``batch // steps`` windows, i.e. 50 of 64 rows at 50 steps);
- ``now``: ``fis.windows_importance`` (the registry's fast paths: all windows, all baselines and steps in
  full calls, one forward pass per call shared by every target through ``model.gradients``).

All methods run under the OpenMP wait policy kipoi-dfim sets on import (``OMP_WAIT_POLICY=PASSIVE`` unless
the environment sets one; waiting threads sleep), or libgomp's own (threads spin) with ``--openmp-default``;
the header says which.

Printed: the device, threads, versions and wait policy, then per framework a table of seconds, pairs/s and the ratio of
each method's throughput to the bare pass, and a matrix of every pairwise throughput ratio.
``--quick`` (3 variants, 2 rounds) runs in a few minutes on 2 CPU threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

L = 600
N_OUT = 164
TARGET = 7


# ------------------------------------------------------------------------------------------------ inputs


def make_pairs(n: int, r: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 2, L, 4) reference and alternate windows, refs (N, R, L, 4) dinucleotide shuffles)."""
    from kipoi_dfim.attribution import shuffled_references

    rng = np.random.default_rng(seed)
    ref = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, L))]
    alt = ref.copy()
    alt[:, L // 2] = np.eye(4, dtype=np.float32)[(ref[:, L // 2].argmax(-1) + 1 + np.arange(n) % 3) % 4]
    refs = shuffled_references(ref, r, [np.random.default_rng([seed, i]) for i in range(n)])
    return np.stack([ref, alt], 1), refs


def dfim_span(n: int, window: int = 15) -> tuple[int, int]:
    """The positions a DFIM run reads in these windows (the variant in the middle): the +-``window`` target
    bases widened to the maps file's +-50 bp, as ``kipoi_dfim.attribution.deeplift_shared`` asks for."""
    from kipoi_dfim.attribution import read_span

    positions = np.zeros((n, L), bool)
    positions[:, L // 2 - window: L // 2 + window + 1] = True
    return read_span(positions, window)


def best_of(methods: dict[str, Callable[[], None]], repeats: int) -> dict[str, tuple[float, float]]:
    """Fastest (wall, process CPU) seconds of each method over ``repeats`` interleaved rounds."""
    best = {name: (float("inf"), float("inf")) for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def report(title: str, timings: dict[str, tuple[float, float]], pairs: int, bare: str) -> None:
    """Print seconds, pairs/s and ratios (to the bare pass, and every pair of methods).

    Wall-clock throughput is the headline; CPU time (all threads of the process) is printed too because on
    a shared machine it is much less sensitive to other jobs than wall time.
    """
    best = {k: v[0] for k, v in timings.items()}
    rate = {k: pairs / v for k, v in best.items()}
    cpu_rate = {k: pairs / v[1] for k, v in timings.items()}
    print(f"\n## {title}: {pairs} (window, reference) pairs, 1 target\n")
    print("| method | wall s | pairs/s | ratio to bare | CPU s | pairs/CPU-s | CPU ratio to bare |")
    print("|---|---|---|---|---|---|---|")
    for k in best:
        print(f"| {k} | {best[k]:.2f} | {rate[k]:.1f} | {rate[k] / rate[bare]:.2f} | {timings[k][1]:.2f} | "
              f"{cpu_rate[k]:.1f} | {cpu_rate[k] / cpu_rate[bare]:.2f} |")
    names = list(best)
    print("\nwall-clock throughput ratio, row / column:\n")
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for a in names:
        print(f"| {a} | " + " | ".join(f"{rate[a] / rate[b]:.2f}" for b in names) + " |")


# ------------------------------------------------------------------------------------------------ PyTorch


def torch_basset(seed: int = 0):
    """Basset-shaped nn.Sequential with random weights, ending in a sigmoid (the adapter scores the logit): the
    network of bench_score_variants.py, so both benchmarks measure the same model."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_score_variants import basset

    return basset(seed)


def zoo_basset(batch: int, device: str, root: Path) -> tuple:
    """(adapter, channels-first logit module) of the zoo's Basset as kipoi/models ships it (torch7-converted
    nn.Sequential with Lambda reshapes, (4, 600, 1) input, state dict; random weights): the harness fixture
    of scripts/zoo, loaded from its model directory like any zoo model."""
    from torch import nn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "zoo"))
    import zoo_fixtures

    from kipoi_dfim.backend import load_model

    fixture = zoo_fixtures.build_basset(root)
    model = load_model(str(fixture.model_dir), batch_size=batch, device=device)

    class Unsqueeze(nn.Module):
        def forward(self, x):
            return x.unsqueeze(-1)  # (B, 4, L) -> the zoo layout (B, 4, L, 1)

    return model, nn.Sequential(Unsqueeze(), model.logit_model.module)


def torch_models(batch: int, device: str, zoo: Path | None = None) -> tuple:
    """(kipoi-dfim adapter, the logit nn.Module on the adapter's device) of one Basset-shaped network: the
    benchmark's own nn.Sequential, or with ``zoo`` (a scratch directory) the zoo's torch7-converted Basset."""
    from torch import nn

    from kipoi_dfim.backend import load_model

    if zoo is not None:
        model, logit = zoo_basset(batch, device, zoo)
    else:
        net = torch_basset()
        model = load_model(net, seq_len=L, layout="(4,L)", batch_size=batch, device=device)
        logit = nn.Sequential(*list(net.children())[:-1])
    logit = logit.to(model.device).eval()
    for p in logit.parameters():
        p.requires_grad_(False)
    return model, logit


def torch_methods(models: tuple, x: np.ndarray, refs: np.ndarray, batch: int) -> dict:
    """The PyTorch methods as closures over the same inputs."""
    import torch
    from captum.attr import DeepLiftShap
    from tangermeme.deep_lift_shap import deep_lift_shap

    from kipoi_dfim.backend.common import AdapterBase

    model, logit = models
    dev = model.device
    n, k, r = x.shape[0], x.shape[1], refs.shape[1]
    rows = torch.from_numpy(np.repeat(x.reshape(n * k, L, 4), r, axis=0).transpose(0, 2, 1).copy()).to(dev)
    xs_cf = torch.from_numpy(x.reshape(n * k, L, 4).transpose(0, 2, 1).copy())
    refs_cf = torch.from_numpy(np.repeat(refs, k, axis=0).transpose(0, 1, 3, 2).copy())
    captum = DeepLiftShap(logit)

    def bare() -> None:
        for a in range(0, len(rows), batch):
            xb = rows[a: a + batch].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(logit(xb)[:, TARGET].sum(), xb)
        _ = g.cpu()

    span = dfim_span(len(x))

    def shared() -> None:
        model.deeplift_shared(x, refs, [TARGET])

    def shared_dfim() -> None:
        model.deeplift_shared(x, refs, [TARGET], span=span)

    def pairwise() -> None:
        AdapterBase._deeplift_shared(model, x, refs, [TARGET])

    def tangermeme() -> None:
        deep_lift_shap(logit, xs_cf, references=refs_cf, target=TARGET, batch_size=batch, hypothetical=True,
                       device=str(dev), warning_threshold=1e9)

    def captum_dls() -> None:
        for i in range(n):
            xi = torch.from_numpy(x[i].transpose(0, 2, 1).copy()).to(dev).requires_grad_(True)
            bi = torch.from_numpy(refs[i].transpose(0, 2, 1).copy()).to(dev)
            captum.attribute(xi, baselines=bi, target=TARGET)

    return {"bare fwd+bwd": bare, "kipoi-dfim shared": shared, "kipoi-dfim shared, DFIM span": shared_dfim,
            "kipoi-dfim pairwise": pairwise,
            "tangermeme deep_lift_shap": tangermeme, "captum DeepLiftShap": captum_dls}


def gradient_methods(models: tuple, x: np.ndarray, targets: list[int], steps: int, batch: int,
                     ig_variants: int) -> dict:
    """grad_input and integrated gradients of the DFIM windows x (N, 2, L, 4) for ``targets``: a bare autograd
    pass per target over the same rows, the code before this release (one target per pass, IG in calls of
    the path points of ``batch // steps`` windows), and the registry's fast paths (all windows, all steps in
    full calls, one forward pass per call for all targets)."""
    import torch

    from kipoi_dfim import fis
    from kipoi_dfim.attribution import _chunks
    from kipoi_dfim.settings import Settings

    model, logit = models
    dev = model.device
    n = x.shape[0]
    W = np.ascontiguousarray(np.moveaxis(x, 1, 0))  # (2, N, L, 4)
    flat = W.reshape(2 * n, L, 4)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)
    W_ig = W[:, :ig_variants]
    flat_ig = W_ig.reshape(-1, L, 4)
    pts = (alphas[None, :, None, None] * flat_ig[:, None]).reshape(-1, L, 4)  # zero baseline
    rows = {"grad_input": torch.from_numpy(flat.transpose(0, 2, 1).copy()).to(dev),
            "integrated_gradients": torch.from_numpy(pts.transpose(0, 2, 1).copy()).to(dev)}

    def bare(method: str) -> Callable[[], None]:
        def run() -> None:
            for t in targets:
                for a in range(0, len(rows[method]), batch):
                    xb = rows[method][a: a + batch].clone().requires_grad_(True)
                    (g,) = torch.autograd.grad(logit(xb)[:, t].sum(), xb)
                _ = g.cpu()
        return run

    def before_grad_input() -> None:
        for t in targets:
            _ = np.concatenate([model.gradient(flat[a:b], t) for a, b in _chunks(len(flat), batch)]) * flat

    def before_ig() -> None:
        for t in targets:
            for a, b in _chunks(len(flat_ig), max(1, batch // steps)):
                p = (alphas[None, :, None, None] * flat_ig[a:b, None]).reshape(-1, L, 4)
                g = np.concatenate([model.gradient(p[c:d], t) for c, d in _chunks(len(p), batch)])
                _ = g.reshape(b - a, steps, L, 4).mean(1) * flat_ig[a:b]

    def now(method: str) -> Callable[[], None]:
        st = Settings(method=method, batch_size=batch, steps=steps)
        if method == "grad_input":
            return lambda: fis.windows_importance(model, W, None, targets, st)
        return lambda: fis.windows_importance(model, W_ig, "zeros", targets, st)

    return {"bare fwd+bwd, grad_input rows": bare("grad_input"), "grad_input before": before_grad_input,
            "grad_input now": now("grad_input"), "bare fwd+bwd, IG path points": bare("integrated_gradients"),
            "integrated gradients before": before_ig, "integrated gradients now": now("integrated_gradients")}


def report_gradients(timings: dict[str, tuple[float, float]], n_windows: int, n_ig: int, targets: int,
                     steps: int) -> None:
    """Windows per second of grad_input / IG before and now, each as a ratio to its bare pass."""
    print(f"\n## grad_input ({n_windows} windows) / integrated gradients ({n_ig} windows, {steps} steps, zero "
          f"baseline), PyTorch, {targets} target(s)\n")
    print("| method | wall s | windows/s | ratio to bare | CPU s | CPU ratio to bare |")
    print("|---|---|---|---|---|---|")
    for name, (wall, cpu) in timings.items():
        grad = "grad_input" in name
        bare = timings["bare fwd+bwd, grad_input rows" if grad else "bare fwd+bwd, IG path points"]
        print(f"| {name} | {wall:.2f} | {(n_windows if grad else n_ig) / wall:.1f} | {bare[0] / wall:.2f} | "
              f"{cpu:.2f} | {bare[1] / cpu:.2f} |")


# ------------------------------------------------------------------------------------------------ Keras


def keras_basset(seed: int = 0):
    """The same architecture in Keras 3, channels last, random weights, final sigmoid."""
    import keras

    keras.utils.set_random_seed(seed)
    L_ = keras.layers
    return keras.Sequential([
        keras.Input((L, 4)),
        L_.Conv1D(300, 19, activation="relu"), L_.MaxPooling1D(3),
        L_.Conv1D(200, 11, activation="relu"), L_.MaxPooling1D(4),
        L_.Conv1D(200, 7, activation="relu"), L_.MaxPooling1D(4),
        L_.Flatten(),
        L_.Dense(1000, activation="relu"), L_.Dense(1000, activation="relu"),
        L_.Dense(N_OUT), L_.Activation("sigmoid"),
    ])


def keras_models(batch: int) -> tuple:
    """(kipoi-dfim adapter, the logit keras.Model, its tf.function gradient) of one Basset-shaped network."""
    import keras
    import tensorflow as tf

    from kipoi_dfim.backend import load_model

    net = keras_basset()
    model = load_model(net, batch_size=batch)
    logit = keras.Model(net.inputs, net.layers[-2].output)

    @tf.function(reduce_retracing=True)
    def grad(xb: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(xb)
            y = logit(xb, training=False)[:, TARGET]
        return tape.gradient(y, xb)

    target_logit = keras.Model(net.inputs, keras.layers.Dense(1, name="target")(net.layers[-3].output))
    dense = net.layers[-2]
    w, b = dense.get_weights()
    target_logit.get_layer("target").set_weights([w[:, TARGET: TARGET + 1], b[TARGET: TARGET + 1]])
    return model, logit, grad, target_logit


def keras_methods(models: tuple, x: np.ndarray, refs: np.ndarray, batch: int) -> dict:
    """The Keras methods as closures over the same inputs."""
    import shap
    import tensorflow as tf

    from kipoi_dfim.backend.common import AdapterBase

    model, logit, grad, target_logit = models
    n, k, r = x.shape[0], x.shape[1], refs.shape[1]
    rows = np.repeat(x.reshape(n * k, L, 4), r, axis=0)

    def bare() -> None:
        for a in range(0, len(rows), batch):
            g = grad(tf.constant(rows[a: a + batch]))
        _ = g.numpy()

    span = dfim_span(len(x))

    def shared() -> None:
        model.deeplift_shared(x, refs, [TARGET])

    def shared_dfim() -> None:
        model.deeplift_shared(x, refs, [TARGET], span=span)

    def pairwise() -> None:
        AdapterBase._deeplift_shared(model, x, refs, [TARGET])

    windows = x.reshape(n * k, L, 4)
    lookup = {windows[i].tobytes(): refs[i // k] for i in range(n * k)}
    # the target's logit as the only output: shap explains every output of a model otherwise
    explainer = shap.DeepExplainer(target_logit, lambda xs: [lookup[np.asarray(xs[0], np.float32).tobytes()]])

    def shap_deep() -> None:
        explainer.shap_values(windows, check_additivity=False)

    return {"bare tf.GradientTape": bare, "kipoi-dfim shared": shared, "kipoi-dfim shared, DFIM span": shared_dfim,
            "kipoi-dfim pairwise": pairwise, "shap DeepExplainer": shap_deep}


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 variants, 2 rounds (a few minutes on 2 CPU threads)")
    ap.add_argument("--variants", type=int, default=12)
    ap.add_argument("--refs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", help="PyTorch device: auto, cpu, cuda, cuda:N, mps")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-gradients", action="store_true", help="no grad_input / IG table")
    ap.add_argument("--grad-variants", type=int, default=32, help="variants of the grad_input / IG table")
    ap.add_argument("--grad-targets", type=int, default=4, help="targets of the grad_input / IG table")
    ap.add_argument("--steps", type=int, default=50, help="integrated-gradients steps")
    ap.add_argument("--ig-variants", type=int, default=2, help="variants of the integrated-gradients rows")
    ap.add_argument("--zoo-basset", action="store_true",
                    help="PyTorch: the zoo's Basset as kipoi/models ships it (torch7 Lambda wrappers, (4,600,1))")
    ap.add_argument("--openmp-default", action="store_true",
                    help="run under libgomp's own wait policy (threads spin) instead of kipoi-dfim's PASSIVE")
    a = ap.parse_args(argv)
    if a.quick:
        a.variants, a.repeats, a.grad_variants, a.ig_variants = 3, 2, 8, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    import kipoi_dfim  # noqa: F401 - as in the CLI: OMP_WAIT_POLICY=PASSIVE unless set, before torch loads libgomp

    if a.openmp_default and user_policy is None:
        del os.environ["OMP_WAIT_POLICY"]
    policy = os.environ.get("OMP_WAIT_POLICY", "libgomp default (spin, then sleep)")
    import tensorflow as tf
    import torch

    torch.set_num_threads(a.threads)
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    warnings.simplefilter("ignore")
    x, refs = make_pairs(a.variants, a.refs, a.seed)
    pairs = x.shape[0] * x.shape[1] * refs.shape[1]
    warm = (x[:1], refs[:1])
    print(f"torch {torch.__version__}, tensorflow {tf.__version__}, {a.threads} threads, batch {a.batch_size}, "
          f"{a.variants} variants x 2 windows x {a.refs} references, best of {a.repeats} interleaved rounds, "
          f"OMP_WAIT_POLICY {policy}")
    if not a.skip_torch:
        scratch = tempfile.TemporaryDirectory()
        models = torch_models(a.batch_size, a.device, Path(scratch.name) if a.zoo_basset else None)
        dev = models[0].device
        print(f"PyTorch device: {dev}; model: {'zoo Basset (torch7-converted)' if a.zoo_basset else 'Basset-shaped'}")
        best_of(torch_methods(models, *warm, a.batch_size), 1)  # warm-up on one variant
        report(f"PyTorch ({dev})", best_of(torch_methods(models, x, refs, a.batch_size), a.repeats), pairs,
               "bare fwd+bwd")
        if not a.skip_gradients:
            gx, _ = make_pairs(a.grad_variants, 1, a.seed + 1)
            targets = [TARGET + 10 * j for j in range(a.grad_targets)]
            best_of(gradient_methods(models, gx[:1], targets, a.steps, a.batch_size, 1), 1)  # warm-up
            timings = best_of(gradient_methods(models, gx, targets, a.steps, a.batch_size, a.ig_variants),
                              a.repeats)
            report_gradients(timings, 2 * a.grad_variants, 2 * min(a.ig_variants, a.grad_variants), len(targets),
                             a.steps)
    if not a.skip_keras:
        gpus = tf.config.list_physical_devices("GPU")
        print(f"\nTensorFlow device: {'GPU ' + gpus[0].name if gpus else 'CPU'}")
        models = keras_models(a.batch_size)
        best_of(keras_methods(models, *warm, a.batch_size), 1)  # warm-up (tracing) on one variant
        methods = keras_methods(models, x, refs, a.batch_size)
        report(f"Keras 3 / TensorFlow ({'GPU' if gpus else 'CPU'})", best_of(methods, a.repeats), pairs,
               "bare tf.GradientTape")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
