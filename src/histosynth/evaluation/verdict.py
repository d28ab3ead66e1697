"""The fidelity audit's overall verdict, from the metrics that discriminate (not from FID).

FID in one encoder's space can sit near the real floor for tiles a person spots as fake at once, so
the verdict ignores FID/KID. It reads:

- the classifier two-sample test (``evaluation/c2st.py``): can a CNN trained on the pixels tell
  synthetic from held-out real tiles? Passes when the 95% interval of its held-out accuracy reaches
  down to ``0.5 + C2ST_MARGIN`` (contains, or nearly contains, chance). When the real-vs-real C2ST
  floor was run (train vs held-out, ``--c2st-floor``) and its accuracy is above 0.5 (the splits
  differ, e.g. by case and stain), that accuracy replaces 0.5;
- improved precision (fidelity) and recall (diversity) against the real floor at the synthetic
  set's size: each passes when at least ``FLOOR_RATIO`` of the floor's value.

Levels: ``fail`` (a classifier tells them apart, or precision is far below the floor), ``warn``
(only recall is low: realistic but missing part of the real variety; or the C2ST was not run, or
its interval is so wide, reaching ``C2ST_UNDERPOWERED`` above chance, that it could hardly have
failed), ``pass`` otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

C2ST_MARGIN = 0.05  # accuracy this close to 0.5 still counts as "indistinguishable"
C2ST_UNDERPOWERED = 0.25  # an interval reaching this far above chance is too wide to call the sets indistinguishable
FLOOR_RATIO = 0.8  # precision/recall must reach this fraction of the real-vs-real floor


@dataclass
class Verdict:
    level: str  # "pass", "warn" or "fail"
    headline: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def fidelity_verdict(fidelity: dict) -> Verdict:
    """Overall verdict of a fidelity audit (``FidelityAudit.to_dict()`` or its JSON file).

    Uses ``fidelity["c2st"]`` (absent or None when skipped) and precision/recall of
    ``synthetic_vs_heldout`` against ``train_subset_vs_heldout``; see the module docstring.
    """
    failures, warnings, notes = [], [], []
    c2st, c2st_floor = fidelity.get("c2st"), fidelity.get("c2st_floor")
    chance = max(0.5, c2st_floor["accuracy"]) if c2st_floor else 0.5
    underpowered = c2st is not None and c2st["ci_high"] > chance + C2ST_UNDERPOWERED
    if c2st is None:
        warnings.append("classifier two-sample test not run: the verdict rests on precision/recall in one "
                        "encoder's space, which can miss obvious artefacts")
    else:
        figure = f"C2ST accuracy {c2st['accuracy']:.3f} [{c2st['ci_low']:.3f}, {c2st['ci_high']:.3f}]"
        if c2st_floor:
            figure += f" (real train vs held-out: {c2st_floor['accuracy']:.3f})"
        if c2st["ci_low"] > chance + C2ST_MARGIN:
            failures.append(f"{figure}: a small CNN tells synthetic from real held-out tiles (p = {c2st['p_value']:.2g})")
        elif underpowered:
            warnings.append(f"{figure}: too few held-out tiles ({c2st['n_heldout']}) to tell; use more tiles")
        else:
            notes.append(f"{figure}: indistinguishable from real held-out tiles to a small CNN")
    synth, floor = fidelity["synthetic_vs_heldout"], fidelity["train_subset_vs_heldout"]
    for name, meaning, bucket in (("precision", "synthetic tiles off the real manifold", failures),
                                  ("recall", "part of the real variety is missing", warnings)):
        figure = f"{name} {synth[name]:.3f} vs real floor {floor[name]:.3f}"
        if synth[name] < FLOOR_RATIO * floor[name]:
            bucket.append(f"{figure}: {meaning}")
        else:
            notes.append(f"{figure}: near the floor")
    if failures:
        return Verdict("fail", "Distinguishable from real tiles", failures + warnings + notes)
    if warnings:
        untested = c2st is None or underpowered
        headline = ("Not shown to be indistinguishable from real tiles" if untested
                    else "Realistic, but less varied than real tiles")
        return Verdict("warn", headline, warnings + notes)
    return Verdict("pass", "Indistinguishable from real held-out tiles by these tests", notes)
