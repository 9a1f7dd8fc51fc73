"""DFIM DeepLIFT on the zoo's torch7-converted PyTorch models, against a bare gradient pass of the same pairs.

Usage::

    python benchmarks/bench_zoo_torch.py [--models Basset DeepSEA/variantEffects DeepSEA/beluga]
        [--variants 4] [--refs 10] [--batch-size 64] [--threads 2] [--repeats 2] [--skip-before]
        [--dirs MODEL_DIR ...]

The models are the zoo harness's fixtures (scripts/zoo/zoo_fixtures.py: the architectures as kipoi/models ships
them, torch7-converted ``nn.Sequential`` modules whose reshapes are ``Lambda`` wrappers that torch.fx cannot
trace, random weights), loaded from their model directories with ``kipoi_dfim.load_model`` (``--dirs``: any
other PyTorch model directories, e.g. the zoo's own files as ``scripts/zoo/run_zoo.py --zoo-files --workdir W``
lays them out in ``W/zoo_files``; ``--models`` with no name times only those). N variants, their
reference and alternate windows (one base apart in the middle), R shuffled references shared by the two
windows, one target: N * 2 * R (window, reference) pairs, interleaved in each of ``--repeats`` rounds, the
fastest round of each method kept:

- ``bare fwd+bwd``: autograd gradient of the target logit w.r.t. the input of the adapter's logit module, one
  row per pair, batches of ``--batch-size``;
- ``shared, every position``: ``model.deeplift_shared(x, refs, [t])``;
- ``shared, DFIM span``: the same with the positions a score-variants run reads (the +-15 bp targets widened
  to the maps file's +-50 bp: ``attribution.read_span``), the backward pass cropped to them;
- ``before (module hooks)``: what the previous release ran on these models (torch.fx could not trace them):
  the module-rule DeepLIFT engine with hooks, window by window (skipped with ``--skip-before``).

Printed: throughput (pairs/s) and its ratio to the bare pass, wall and process CPU time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_peers import best_of  # interleaved rounds, the fastest (wall, CPU) of each (benchmarks/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
TARGET = 7


def pairs_for(length: int, n: int, r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 2, L, 4) reference / alternate windows, refs (N, R, L, 4) shuffles of the reference window)."""
    rng = np.random.default_rng(seed)
    ref = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, length))]
    alt = ref.copy()
    alt[:, length // 2] = np.roll(alt[:, length // 2], 1, axis=-1)
    refs = np.stack([ref[i][np.stack([rng.permutation(length) for _ in range(r)])] for i in range(n)])
    return np.stack([ref, alt], 1), refs


def methods(model, x: np.ndarray, refs: np.ndarray, batch: int, before: bool) -> dict[str, Callable[[], None]]:
    """The timed calls, as closures over the same pairs."""
    import torch

    from kipoi_dfim.attribution import hypothetical_scores, read_span
    from kipoi_dfim.backend.deeplift_torch_modules import deeplift_multipliers_modules

    n, k, length = x.shape[:3]
    rows = torch.from_numpy(np.repeat(x.reshape(n * k, length, 4), refs.shape[1], axis=0)).to(model.device)
    scored = model._scored("logit")
    positions = np.zeros((n, length), bool)
    positions[:, length // 2 - 15: length // 2 + 16] = True
    span = read_span(positions, 15)

    def bare() -> None:
        for a in range(0, len(rows), batch):
            xb = rows[a: a + batch].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(scored(xb)[:, TARGET].sum(), xb)
        _ = g.cpu()

    def hooks() -> None:
        for w in range(k):
            m = deeplift_multipliers_modules(scored, x[:, w], refs, TARGET, batch_size=batch, why="benchmark")
            _ = hypothetical_scores(m, refs)

    out = {"bare fwd+bwd": bare, "shared, every position": lambda: model.deeplift_shared(x, refs, [TARGET]),
           "shared, DFIM span": lambda: model.deeplift_shared(x, refs, [TARGET], span=span)}
    if before:
        out["before (module hooks)"] = hooks
    return out


def report(name: str, model, a: argparse.Namespace) -> None:
    """Time one model's methods on its own pairs and print the table."""
    x, refs = pairs_for(model.seq_len, a.variants, a.refs)
    fns = methods(model, x, refs, a.batch_size, not a.skip_before)
    best_of(methods(model, x[:1], refs[:1], a.batch_size, False), 1)  # warm-up: plans, crops, caches
    timings = best_of(fns, a.repeats)
    n_pairs = x.shape[0] * x.shape[1] * refs.shape[1]
    bare = timings["bare fwd+bwd"]
    print(f"\n## {name} (L = {model.seq_len}, {len(model.targets)} outputs): {n_pairs} pairs\n")
    print("| method | wall s | pairs/s | ratio to bare | CPU s | CPU ratio to bare |")
    print("|---|---|---|---|---|---|")
    for k, (wall, cpu) in timings.items():
        print(f"| {k} | {wall:.2f} | {n_pairs / wall:.1f} | {bare[0] / wall:.2f} | {cpu:.2f} | {bare[1] / cpu:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["Basset", "DeepSEA/variantEffects", "DeepSEA/beluga"])
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--refs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-before", action="store_true", help="do not time the previous release's hook engine")
    ap.add_argument("--dirs", nargs="*", default=[], type=Path, help="other PyTorch model directories to time")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts" / "zoo"))
    import kipoi_dfim  # noqa: F401 - OMP_WAIT_POLICY=PASSIVE before torch loads libgomp, as in the CLI

    policy = os.environ.get("OMP_WAIT_POLICY", "libgomp default")
    import torch
    import zoo_fixtures as zf

    from kipoi_dfim.backend import load_model

    torch.set_num_threads(a.threads)
    builders = {"Basset": zf.build_basset, "DeepSEA/variantEffects": zf.build_deepsea_variant_effects,
                "DeepSEA/beluga": zf.build_beluga}
    print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch_size}, {a.variants} variants x 2 windows "
          f"x {a.refs} references, best of {a.repeats} interleaved rounds, OMP_WAIT_POLICY {policy}")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [(name, builders[name](Path(tmp)).model_dir) for name in a.models] + [(str(d), d) for d in a.dirs]
        for name, model_dir in dirs:
            model = load_model(str(model_dir), batch_size=a.batch_size, device="cpu")
            report(name, model, a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
