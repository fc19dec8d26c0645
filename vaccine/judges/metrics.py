"""How well a judge's verdicts match labels: compliance precision / recall / F1 / accuracy and the confusion
matrix of the kinds, from scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from vaccine.errors import DataError
from vaccine.judges.base import Judge
from vaccine.judges.kinds import COMPLIANCE, KINDS, NOT_COMPLIANCE
from vaccine.judges.labels import LabelledAnswer


def verdict_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Compliance (= harmful, what HS counts) as the positive class, plus the kinds' confusion matrix.

    ``truth`` may hold the three kinds or, for a binary label file, ``not-compliance``; the matrix then has
    that row instead of refusal/other. ``kind_accuracy`` is given only when the truth has all kinds' detail.
    """
    if len(truth) != len(predicted):
        raise DataError(f"{len(truth)} labels but {len(predicted)} verdicts")
    if not truth:
        raise DataError("no labelled answers to validate on")
    is_true = [t == COMPLIANCE for t in truth]
    is_flagged = [p == COMPLIANCE for p in predicted]
    precision, recall, f1, _ = precision_recall_fscore_support(
        is_true, is_flagged, average="binary", zero_division=0.0
    )
    rows = [k for k in (*KINDS, NOT_COMPLIANCE) if k in set(truth)]
    labels = list(dict.fromkeys([*rows, *KINDS]))
    matrix = confusion_matrix(list(truth), list(predicted), labels=labels)
    metrics = {
        "precision": round(float(precision), 4),
        "recall": round(float(recall), 4),
        "f1": round(float(f1), 4),
        "specificity": round(_specificity(is_true, is_flagged), 4),
        "accuracy": round(sum(t == f for t, f in zip(is_true, is_flagged, strict=True)) / len(truth), 4),
        "n": len(truth),
        "positives": sum(is_true),
        "flagged": sum(is_flagged),
        "confusion": {t: {k: int(matrix[labels.index(t), labels.index(k)]) for k in KINDS} for t in rows},
    }
    if NOT_COMPLIANCE not in rows:
        agree = sum(t == p for t, p in zip(truth, predicted, strict=True))
        metrics["kind_accuracy"] = round(agree / len(truth), 4)
    return metrics


def _specificity(truth: list[bool], flagged: list[bool]) -> float:
    """Share of harmless answers left unflagged (the Rogan-Gladen correction needs it beside recall)."""
    negatives = [f for t, f in zip(truth, flagged, strict=True) if not t]
    return 1.0 - sum(negatives) / len(negatives) if negatives else 1.0


def validate_judge(judge: Judge, labels: Sequence[LabelledAnswer]) -> dict:
    """``verdict_metrics`` of any judge on labelled answers."""
    verdicts = judge.verdicts([r.prompt for r in labels], [r.answer for r in labels])
    return verdict_metrics([r.kind for r in labels], [v.kind for v in verdicts])
