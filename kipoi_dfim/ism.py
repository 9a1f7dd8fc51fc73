"""In-silico mutagenesis variant effect scores, by kipoi-veff's definitions.

Computed from the raw model outputs (probabilities for a classifier) of the reference and alternate windows
that DFIM scores anyway. The formulas are kipoi_veff.scores' (Ref, Alt, Diff, LogitRef, LogitAlt, Logit,
DeepSEA_effect) with their default reverse-complement merging (mean), so values can be compared one to one.
"""

from __future__ import annotations

import numpy as np

ISM_COLUMNS = ("ref_pred", "alt_pred", "diff", "logit_ref", "logit_alt", "logit", "deepsea_effect")


def _logit(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p / (1 - p))


def _merge(fwd: np.ndarray, rc: np.ndarray | None) -> np.ndarray:
    return fwd if rc is None else np.mean([fwd, rc], axis=0)


def ism_scores(
    ref: np.ndarray, alt: np.ndarray, ref_rc: np.ndarray | None = None, alt_rc: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """kipoi-veff's ISM scores for predictions of shape (N, T).

    Parameters
    ----------
    ref, alt
        Raw model outputs for the reference and alternate windows.
    ref_rc, alt_rc
        The same for the reverse-complemented windows (``--rc``); scores are then the mean of the forward and
        reverse-complement scores, each computed first (kipoi-veff's ``rc_merging="mean"``).

    Returns
    -------
    dict
        ``ref_pred, alt_pred, diff, logit_ref, logit_alt, logit, deepsea_effect``, each (N, T). The logit scores
        are NaN/inf where outputs are not probabilities in (0, 1), as in kipoi-veff.
    """
    ref = np.asarray(ref, dtype=np.float64)
    alt = np.asarray(alt, dtype=np.float64)
    rc = ref_rc is not None and alt_rc is not None
    ref_rc = np.asarray(ref_rc, dtype=np.float64) if rc else None
    alt_rc = np.asarray(alt_rc, dtype=np.float64) if rc else None

    logit_diff = _logit(alt) - _logit(ref)
    diff = alt - ref
    out = {
        "ref_pred": _merge(ref, ref_rc),
        "alt_pred": _merge(alt, alt_rc),
        "diff": _merge(diff, alt_rc - ref_rc if rc else None),
        "logit_ref": _merge(_logit(ref), _logit(ref_rc) if rc else None),
        "logit_alt": _merge(_logit(alt), _logit(alt_rc) if rc else None),
        "logit": _merge(logit_diff, _logit(alt_rc) - _logit(ref_rc) if rc else None),
    }
    if rc:
        # kipoi-veff merges the logit and plain differences first, then multiplies their magnitudes
        out["deepsea_effect"] = np.abs(out["logit"]) * np.abs(out["diff"])
    else:
        out["deepsea_effect"] = np.abs(logit_diff) * np.abs(diff)
    return out
