"""The promotion gate: whether a newly trained model replaces the production one, and why.

One owner for the rule, so the retrain flow, the report and the tests agree on it: the
policies, the champion/challenger comparison (``decide_promotion``), which test files make
the comparison fair to both models (``fair_test_files``) and how the gate explains what it
left out (``fairness_note``). Pure functions over plain values: no models, no Prefect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.train.choices import PROMOTE_POLICIES


def decide_promotion(policy: str, challenger_f1: float | None, champion_f1: float | None,
                     margin: float, has_production: bool,
                     champion_error: str | None = None,
                     challenger_shift_f1: float | None = None,
                     champion_shift_f1: float | None = None) -> tuple[bool, str]:
    """The champion/challenger gate: (promote?, why). Both scores are on the SAME new test
    split; the champion's is re-evaluated there, never copied from its metadata.

    With shifted scores (the same test files moved by the training augmentations), a
    challenger that is better in distribution but worse on shift by more than ``margin`` is
    refused: it learned the renderer, not the pose, and real input is never our renderer.
    The shift tolerance is ``|margin|``: a negative margin (promote even when a little worse)
    loosens both rules alike."""
    if policy not in PROMOTE_POLICIES:
        raise ValueError(f"unknown promotion policy {policy!r}; use one of "
                         f"{', '.join(PROMOTE_POLICIES)}")
    if policy == "never":
        return False, "registered only (--promote never)"
    if policy == "always":
        return True, "promoted unconditionally (--promote always)"
    if not has_production:
        return True, "first model: no production model to compare against"
    if champion_error:
        return False, f"not promoted: the production model could not be re-evaluated " \
                      f"({champion_error}); use --promote always to replace it"
    if challenger_f1 is None or champion_f1 is None:
        return False, "not promoted: no test frames to compare on"
    need = champion_f1 + margin
    verdict = (f"challenger macro-F1 {challenger_f1:.4f} vs production {champion_f1:.4f} "
               f"+ margin {margin:.4f} = {need:.4f} on the new test split")
    if challenger_f1 < need:
        return False, f"not promoted: {verdict}"
    if challenger_shift_f1 is not None and champion_shift_f1 is not None:
        floor = champion_shift_f1 - abs(margin)
        shift = (f"on the shifted test split {challenger_shift_f1:.4f} vs production "
                 f"{champion_shift_f1:.4f} - |margin| {abs(margin):.4f} = {floor:.4f}")
        if challenger_shift_f1 < floor:
            return False, f"not promoted: worse on shift ({shift}), though {verdict}"
        verdict += f"; {shift}"
    return True, f"promoted: {verdict}"


def fair_test_files(test: Sequence[int], groups: Sequence[str], metadata: dict[str, Any]
                    ) -> tuple[list[int], int, str]:
    """The test files both models are compared on: (files, how many left out, note).

    Test groups the production model was trained or calibrated on (its metadata's split)
    would flatter it, so they are left out. ``groups[i]`` is file ``i``'s group. When every
    test group was seen, all test files are kept and the note says the comparison flatters
    production (an empty comparison would decide nothing). A production model trained on a
    file split (the fallback when there were too few groups) names no groups: no test file
    can be proven unseen by it, so all are kept and the note says so."""
    method = metadata.get("split", {}).get("method")
    if method not in (None, "group"):
        return list(test), 0, (f"production was trained on a {method} split: no test file "
                               "can be proven unseen by it, so the comparison may flatter "
                               "production")
    seen = {g for side in ("train", "val")
            for g in metadata.get("split", {}).get("groups", {}).get(side, [])}
    fair = [i for i in test if groups[i] not in seen]
    left_out = len(test) - len(fair)
    note = ""
    if not fair:
        fair = list(test)
        note = ("every test group was in the production model's training data: the "
                "comparison flatters production")
    return fair, left_out, note


def f1_of(champion: dict[str, Any] | None, key: str) -> float | None:
    """The macro-F1 under ``key`` of the champion's re-evaluation (None when absent)."""
    return (champion.get(key) or {}).get("macro_f1") if champion else None


def fairness_note(champion: dict[str, Any], n_test: int) -> str:
    """What the gate's comparison left out, for the promotion reason (and so the report)."""
    if champion.get("note"):
        return f"; {champion['note']}"
    left = champion.get("excluded_files", 0)
    if not left:
        return ""
    return (f" (both scored on the {n_test - left} test file(s) of groups production never "
            f"trained on; {left} left out)")


def target_verdict(target: dict[str, Any] | None, margin: float) -> str | None:
    """Why the challenger is refused on the target-domain test set (the held-out labels fed
    back), or None. A model better on the labeled folder but worse on the heatmaps users
    actually have is the one mistake a folder's own test split cannot see."""
    if not target or "production" not in target:
        return None
    prod = target["production"]
    if "error" in prod:
        return (f"not promoted: production could not be scored on the {target['frames']} "
                f"held-out feedback frame(s) ({prod['error']})")
    mine, theirs = target["challenger"]["macro_f1"], prod["macro_f1"]
    floor = theirs - abs(margin)
    if mine < floor:
        return (f"not promoted: worse on the {target['frames']} held-out feedback frame(s) "
                f"(macro-F1 {mine:.4f} vs production {theirs:.4f} - |margin| "
                f"{abs(margin):.4f} = {floor:.4f})")
    return None


def gate_verdict(policy: str, margin: float, evaluation: dict[str, Any],
                 champion: dict[str, Any] | None, n_test: int,
                 target: dict[str, Any] | None = None,
                 adapted_unjudged: bool = False) -> tuple[bool, str]:
    """Apply ``decide_promotion`` to one retrain's scores.

    When production was re-evaluated on a subset of the test split (groups it never trained
    on), the challenger's score on that same subset is the one compared. With a
    target-domain test set (``target``), ``if-better`` also requires the challenger not to
    be worse there than production by more than ``|margin|``. A model adapted to the
    unlabeled stream that no target-domain label judged is promoted only with ``always``:
    the label-free estimate flatters a self-trained model's own confidence."""
    if policy == "if-better" and adapted_unjudged:
        return False, ("not promoted: adapted to the unlabeled stream with no target-domain "
                       "labels to judge it (no labeled target frames, no feedback); "
                       "use --promote always to deploy it anyway")
    challenger_f1 = evaluation["metrics"].get("macro_f1")
    if champion and "challenger_metrics" in champion:  # the same files for both models
        challenger_f1 = champion["challenger_metrics"].get("macro_f1")
    ok, reason = decide_promotion(
        policy, challenger_f1,
        champion["metrics"].get("macro_f1") if champion and "metrics" in champion else None,
        margin, has_production=champion is not None,
        champion_error=champion.get("error") if champion else None,
        challenger_shift_f1=f1_of(champion, "challenger_shift_metrics"),
        champion_shift_f1=f1_of(champion, "shift_metrics"))
    if policy == "if-better" and champion and "metrics" in champion:
        reason += fairness_note(champion, n_test)
    refused = target_verdict(target, margin) if policy == "if-better" and ok else None
    if refused:
        return False, f"{refused}; {reason}"
    if policy == "if-better" and target and "macro_f1" in target.get("production", {}):
        reason += (f"; on the {target['frames']} held-out feedback frame(s) "
                   f"{target['challenger']['macro_f1']:.4f} vs production "
                   f"{target['production']['macro_f1']:.4f}")
    return ok, reason
