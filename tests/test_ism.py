"""ISM effect scores equal kipoi-veff's (the oracle: kipoi_veff.scores, installed --no-deps)."""

import warnings

import numpy as np
import pytest

from kipoi_dfim.ism import ism_scores

kv = pytest.importorskip("kipoi_veff.scores")

ORACLE = {
    "ref_pred": kv.Ref,
    "alt_pred": kv.Alt,
    "diff": kv.Diff,
    "logit_ref": kv.LogitRef,
    "logit_alt": kv.LogitAlt,
    "logit": kv.Logit,
    "deepsea_effect": kv.DeepSEA_effect,
}


@pytest.mark.parametrize("rc", [False, True])
def test_ism_scores_equal_kipoi_veff(rc):
    rng = np.random.default_rng(1)
    ref, alt, ref_rc, alt_rc = (rng.uniform(0.01, 0.99, (50, 3)) for _ in range(4))
    ours = ism_scores(ref, alt, ref_rc if rc else None, alt_rc if rc else None)
    for name, cls in ORACLE.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = cls(rc_merging="mean")(ref, alt, ref_rc if rc else None, alt_rc if rc else None)
        np.testing.assert_allclose(ours[name], expected, rtol=1e-12, err_msg=name)


def test_ism_scores_known_values():
    out = ism_scores(np.array([[0.5]]), np.array([[0.75]]))
    assert out["diff"][0, 0] == pytest.approx(0.25)
    assert out["logit"][0, 0] == pytest.approx(np.log(3.0))
    assert out["deepsea_effect"][0, 0] == pytest.approx(0.25 * np.log(3.0))
