"""Scoring on a real Dask LocalCluster (2 worker processes) gives the single-process run's output, byte for byte.

The oracle is the single-process run of the same code on the shipped simulated example (sim_torch,
example_vcfs/sim): the TSV and the annotated VCF must be the same bytes and every maps dataset and attribute
equal, with a per-variant null and with a pooled null, when a worker is killed mid-run, and for the CLI.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from tqdm import tqdm

from kipoi_dfim import scoring
from kipoi_dfim.errors import InputError
from kipoi_dfim.variants import Fasta

distributed = pytest.importorskip("distributed")
from kipoi_dfim import distributed as D  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "example_vcfs" / "sim"
MODEL = str(ROOT / "model_specs" / "sim_torch")
VCF, FASTA = str(SIM / "sim_variants.vcf"), str(SIM / "sim_contigs.fa")
# chunks of 4 records: the 40 records are 10 chunks, so both workers get several tasks and several are in flight
PER_VARIANT = dict(method="grad_input", null_shuffles=2, chunk_size=4)
POOLED = dict(null="pooled", null_size=20, n_refs=2, chunk_size=4)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            distributed.Client(cl) as c:
        c.wait_for_workers(2)
        yield c


def _run(d: Path, **kw) -> Path:
    d.mkdir()
    scoring.score_variants(MODEL, VCF, FASTA, out=str(d / "o.vcf"), tsv=str(d / "o.tsv"), maps=str(d / "o.h5"),
                           quiet=True, return_table=False, **kw)
    return d


def _assert_same(a: Path, b: Path) -> None:
    assert (a / "o.tsv").read_bytes() == (b / "o.tsv").read_bytes()
    assert (a / "o.vcf").read_bytes() == (b / "o.vcf").read_bytes()
    with h5py.File(a / "o.h5") as ha, h5py.File(b / "o.h5") as hb:
        assert set(ha) == set(hb) and len(ha["fis"]) > 0
        for k in ha:
            x, y = ha[k][:], hb[k][:]
            assert x.dtype == y.dtype and x.shape == y.shape, k
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x, y, err_msg=k)  # NaN == NaN here, bits otherwise
            else:
                assert (x == y).all(), k
        assert {k: str(v) for k, v in ha.attrs.items()} == {k: str(v) for k, v in hb.attrs.items()}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """Single-process outputs (the oracle) with a per-variant null."""
    return _run(tmp_path_factory.mktemp("single") / "run", **PER_VARIANT)


def test_per_variant_null_same_bytes(client, baseline, tmp_path):
    d = _run(tmp_path / "dask", client=client, **PER_VARIANT)
    _assert_same(baseline, d)
    df = pd.read_csv(d / "o.tsv", sep="\t")  # every record once per (ALT, target): nothing lost or duplicated
    assert sorted(set(df.vcf_record)) == list(range(50))
    assert not df.duplicated(["vcf_record", "alt_index", "target"]).any()


def test_pooled_null_same_bytes_any_task_size(client, tmp_path):
    """Pooled null on the cluster, with a Client and with the scheduler's address (``--dask tcp://...``)."""
    single = _run(tmp_path / "single", **POOLED)
    _assert_same(single, _run(tmp_path / "dask1", client=client, **POOLED))
    address = client.scheduler.address
    assert address.startswith("tcp://")
    _assert_same(single, _run(tmp_path / "dask3", client=address, chunks_per_task=3, **POOLED))


def test_data_error_fails_run_naming_records(client):
    """An InputError raised on a worker (the model cannot be loaded there) ends the run, naming the chunk's
    VCF lines; it is returned as a value (no retries), so the run fails at once instead of hanging."""
    settings = scoring.make_settings(**PER_VARIANT)
    fa = Fasta(FASTA)
    chunks = scoring.file_chunks(VCF, fa, 200, settings, None)
    first = next(scoring.iter_chunks(VCF, fa, 200, chunk_size=4))[0]
    fp = scoring.FilePass([], 1, settings, tqdm(disable=True), 0)
    ref = D.ModelRef(str(ROOT / "no_such_model"), None, tuple(scoring.load_options(settings).items()))
    t0 = time.monotonic()
    with pytest.raises(InputError, match=f"no_such_model.*VCF lines {first[0].line}-{first[-1].line}"):
        D.score_file(client, ref, FASTA, chunks, fp, [0], ["t"], settings)
    assert time.monotonic() - t0 < 60
    assert fp.n_rows == 0  # nothing was written before the failing first chunk


def test_bad_vcf_line_mid_file_fails_naming_it(client, tmp_path):
    """A malformed record after several chunks are in flight: the run stops with the reader's one-line error
    naming the line, the tasks in flight are cancelled and no output file is left."""
    lines = Path(VCF).read_text().splitlines(keepends=True)
    n_header = sum(ln.startswith("#") for ln in lines)
    bad_line = n_header + 30  # the 30th record
    lines[bad_line - 1] = "chr1 100 broken\n"
    vcf = tmp_path / "bad.vcf"
    vcf.write_text("".join(lines))
    with pytest.raises(InputError, match=f"bad.vcf, line {bad_line}"):
        scoring.score_variants(MODEL, vcf, FASTA, out=str(tmp_path / "o.vcf"), tsv=str(tmp_path / "o.tsv"),
                               quiet=True, return_table=False, client=client, **PER_VARIANT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vcf"]
    deadline = time.monotonic() + 30
    while client.processing() and any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(client.processing().values())  # nothing left running on the cluster


def test_bad_dask_spec_and_command_line():
    for bad in ("local:0", "local:x", "myhost:8786"):
        with pytest.raises(InputError, match="--dask"):
            with D.connect(bad):
                pass
    argv = ["m", "--dask", "local:2", "--vcf", "v", "--dask=tcp://h:1", "-o", "o"]
    assert scoring._without_dask(argv) == ["m", "--vcf", "v", "-o", "o"]
    with pytest.raises(InputError, match="model object"):
        D.model_ref(object(), None, scoring.make_settings())


def test_no_dask_import_without_dask(tmp_path):
    code = (
        "import sys\n"
        "from kipoi_dfim.cli import main\n"
        f"rc = main(['score-variants', {MODEL!r}, '--vcf', {VCF!r}, '--fasta', {FASTA!r}, '-o', "
        f"{str(tmp_path / 'o.vcf')!r}, '--method', 'grad_input', '--quiet'])\n"
        "assert rc == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "o.vcf").stat().st_size > 0


def test_killed_worker_rescheduled(client, baseline, tmp_path, monkeypatch):
    """SIGKILL a worker process while it is scoring chunks (as soon as the client takes a chunk then): the
    scheduler reruns its tasks on the other worker (and on the restarted one); the output is unchanged."""
    pids = client.run(os.getpid)
    killed: dict = {}
    take = scoring.FilePass.take

    def take_and_kill(self, *args):
        if not killed:  # at the first chunk taken while a worker is busy with later ones
            busy = {w: len(keys) for w, keys in client.processing().items()}
            victim = max(busy, key=busy.get)
            if busy[victim]:
                killed.update(worker=victim, tasks=busy[victim], pid=pids[victim])
                os.kill(pids[victim], signal.SIGKILL)
        take(self, *args)

    monkeypatch.setattr(scoring.FilePass, "take", take_and_kill)
    d = _run(tmp_path / "dask", client=client, **PER_VARIANT)
    assert killed and killed["tasks"] >= 1  # a worker died with chunks to lose
    _assert_same(baseline, d)
    client.wait_for_workers(2, timeout=60)
    assert killed["pid"] not in client.run(os.getpid).values()


@pytest.mark.slow
def test_cli_local_cluster_same_bytes(tmp_path):
    """``score-variants --dask local:2`` (its own LocalCluster) writes the same bytes as the plain command,
    including the VCF header's command line (which leaves out --dask), and shows one bar of records."""
    args = [MODEL, "--vcf", VCF, "--fasta", FASTA, "-o", "o.vcf", "--tsv", "o.tsv", "--maps", "o.h5",
            "--null-shuffles", "2", "--method", "grad_input", "--chunk-size", "4"]
    runs = {}
    for name, extra in (("single", []), ("dask", ["--dask", "local:2"])):
        (tmp_path / name).mkdir()
        r = subprocess.run([sys.executable, "-m", "kipoi_dfim.cli", "score-variants", *args, *extra],
                           capture_output=True, text=True, cwd=tmp_path / name,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr
        runs[name] = r.stderr
    _assert_same(tmp_path / "single", tmp_path / "dask")
    assert "score-variants: 100%" in runs["dask"] and "50/50" in runs["dask"]
