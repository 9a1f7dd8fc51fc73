"""``--seq-len N`` / ``seq_len=N``: the window length of a model whose input length is not fixed.

A real Kipoi model directory with a Keras model of input ``(None, 4)`` (as the zoo's pwm_HOCOMOCO) is scored by
the command line ``score-variants --seq-len`` on the simulated example VCF/FASTA; every record must be written
and the scores must equal those of the Python API on the model loaded with ``load_model(dir, seq_len=N)`` (the
keyword path, not the Settings one). Without the option the error names ``--seq-len`` (CLI) and ``seq_len=``
(Python); on a fixed-length model a different ``--seq-len`` is a one-line error naming the model's length.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import kipoi_dfim
from kipoi_dfim import distributed
from kipoi_dfim.cli import build_parser
from kipoi_dfim.cli import main as cli_main
from kipoi_dfim.errors import InputError
from kipoi_dfim.kipoi_spec import DfimPredictor, write_kipoi_spec
from kipoi_dfim.output.tsv import read_table
from kipoi_dfim.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SIM = REPO / "example_vcfs" / "sim"
VCF, FASTA = SIM / "sim_variants.vcf", SIM / "sim_contigs.fa"
N = 101  # the window length asked for (the sim contigs are 400 bp)
FIXED = 60
SCORE_COLUMNS = ["max_abs_fis", "max_fis_offset", "fis_at_max", "ref_pred", "alt_pred", "logit_ref", "logit_alt"]


def _keras_dir(d: Path, length: int | None) -> Path:
    """A Kipoi model dir (type: keras, one .keras file): conv -> global average -> dense sigmoid, 2 targets."""
    import keras

    keras.utils.set_random_seed(11)
    inp = keras.Input((length, 4), name="seq")
    h = keras.layers.Conv1D(4, 7, activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(2, activation="sigmoid")(h)
    d.mkdir()
    keras.Model(inp, out).save(d / "model.keras")
    shape = f"({'None' if length is None else length}, 4)"
    (d / "model.yaml").write_text(yaml.safe_dump({
        "type": "keras", "args": {"weights": "model.keras"},
        "schema": {"inputs": {"name": "seq", "shape": shape},
                   "targets": {"name": "out", "shape": "(2,)", "column_labels": ["up", "down"]}},
    }))
    return d


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq_len")
    return {"var": _keras_dir(root / "var", None), "fixed": _keras_dir(root / "fixed", FIXED)}


def _records(vcf: Path) -> list[str]:
    return [ln.split("\t")[2] for ln in vcf.read_text().splitlines() if ln and not ln.startswith("#")]


def _cli(dirs, tmp_path, *extra):
    out = tmp_path / "out.vcf"
    rc = cli_main(["score-variants", str(dirs["var"]), "--vcf", str(VCF), "--fasta", str(FASTA), "-o", str(out),
                   "--tsv", str(tmp_path / "out.tsv"), "--method", "grad_input", "--motifs", "none", "--quiet",
                   *extra])
    return rc, out


def test_cli_seq_len_scores_every_record_as_the_python_api(dirs, tmp_path):
    rc, out = _cli(dirs, tmp_path, "--seq-len", str(N))
    assert rc == 0
    assert _records(out) == _records(VCF)  # every record written, in order
    cli = read_table(str(tmp_path / "out.tsv"))
    model = kipoi_dfim.load_model(str(dirs["var"]), seq_len=N)
    assert model.seq_len == N
    api = kipoi_dfim.score_variants(model, VCF, FASTA, method="grad_input", motifs="none", quiet=True)
    assert (cli["status"] == "ok").sum() > 30  # most sim variants are scored at 101 bp
    assert list(cli["variant_id"]) == list(api["variant_id"]) and list(cli["status"]) == list(api["status"])
    for col in SCORE_COLUMNS:
        np.testing.assert_allclose(pd.to_numeric(cli[col]), pd.to_numeric(api[col]), rtol=1e-5, atol=1e-6,
                                   err_msg=col)
    # the length changes the numbers: another N gives other scores
    other = kipoi_dfim.score_variants(str(dirs["var"]), VCF, FASTA, method="grad_input", motifs="none",
                                      quiet=True, seq_len=N + 20)
    ok = (api["status"] == "ok").to_numpy() & (other["status"] == "ok").to_numpy()
    assert not np.allclose(api["logit_ref"][ok].astype(float), other["logit_ref"][ok].astype(float))


def test_without_seq_len_the_error_names_the_option(dirs, tmp_path, capsys):
    rc, out = _cli(dirs, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.strip().count("\n") == 0 and "input length is unknown" in err and "--seq-len N" in err, err
    with pytest.raises(InputError, match=r"seq_len=N"):
        kipoi_dfim.load_model(str(dirs["var"]))
    with pytest.raises(InputError, match=r"seq_len=N"):
        kipoi_dfim.score_variants(str(dirs["var"]), VCF, FASTA, quiet=True)


def test_fixed_length_model_refuses_another_seq_len(dirs, tmp_path, capsys):
    out = tmp_path / "o.vcf"
    argv = ["score-variants", str(dirs["fixed"]), "--vcf", str(VCF), "--fasta", str(FASTA), "-o", str(out),
            "--method", "grad_input", "--quiet"]
    assert cli_main([*argv, "--seq-len", str(FIXED + 1)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and f"fixed at {FIXED}" in err and "--seq-len" in err, err
    assert not out.exists()
    # the model's own length is accepted; a loaded model object is not resized either
    assert kipoi_dfim.load_model(str(dirs["fixed"]), seq_len=FIXED).seq_len == FIXED
    m = kipoi_dfim.load_model(str(dirs["fixed"]))
    with pytest.raises(InputError, match=f"input length is {FIXED}.*seq_len={FIXED + 1}"):
        kipoi_dfim.score_variants(m, VCF, FASTA, quiet=True, seq_len=FIXED + 1)
    with pytest.raises(InputError, match="--seq-len must be an integer >= 1"):
        Settings(seq_len=0)


def test_every_model_loading_command_takes_seq_len():
    p = build_parser()
    common = ["m", "-o", "x"]
    cases = {"score-variants": [*common, "--vcf", "v", "--fasta", "f"],
             "interactions": [*common, "--fasta", "f", "--features", "b"],
             "plot": [*common, "--variant", "v"], "kipoi-spec": common,
             "neuron-motifs": [*common, "--layer", "1"]}
    for cmd, argv in cases.items():
        assert p.parse_args([cmd, *argv, "--seq-len", "77"]).seq_len == 77, cmd


def test_seq_len_reaches_dask_workers_and_kipoi_spec(dirs, tmp_path):
    # what a Dask worker loads: the ModelRef built from the settings carries the length
    ref = distributed.model_ref(str(dirs["var"]), None, Settings(seq_len=N))
    assert dict(ref.options)["seq_len"] == N
    assert ref.load().seq_len == N
    assert "seq_len" not in dict(distributed.model_ref(str(dirs["var"]), None, Settings()).options)
    # kipoi-spec: the written directory runs the model at the given length under `kipoi predict`
    spec = write_kipoi_spec(str(dirs["var"]), tmp_path / "spec", seq_len=N, method="grad_input", n_example=3)
    assert DfimPredictor(spec).model.seq_len == N
    with pytest.raises(InputError, match="--seq-len N"):
        write_kipoi_spec(str(dirs["var"]), tmp_path / "spec2")


def test_tensorflow2_savedmodel_of_unknown_length_takes_seq_len(tmp_path):
    """A SavedModel whose signature and Kipoi schema both leave the length open: filled from seq_len."""
    import keras

    src = keras.models.load_model(_keras_dir(tmp_path / "k", None) / "model.keras")
    d = tmp_path / "tf2"
    src.export(str(d / "savedmodel"), verbose=False)
    (d / "model.yaml").write_text(yaml.safe_dump({
        "type": "tensorflow2", "args": {"savedmodel_path": "savedmodel"},
        "schema": {"inputs": {"name": "seq", "shape": "(None, 4)"},
                   "targets": {"name": "out", "shape": "(2,)", "column_labels": ["up", "down"]}},
    }))
    with pytest.raises(InputError, match=r"--seq-len N \(Python: seq_len=N\)"):
        kipoi_dfim.load_model(str(d), output="raw")
    m = kipoi_dfim.load_model(str(d), output="raw", seq_len=N)
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(1).integers(0, 4, (3, N))]
    assert m.seq_len == N
    np.testing.assert_allclose(m.predict(x), np.asarray(src(x)), rtol=1e-5, atol=1e-6)
