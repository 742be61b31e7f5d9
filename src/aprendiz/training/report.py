"""The run's report: a candidate table (Markdown and HTML) and PNG plots, as bytes by file name.

Plots (matplotlib, Agg backend): ``roc.png`` and ``pr.png`` (every candidate and the champion
on the test set), ``confusion.png`` (the best candidate at its threshold), ``calibration.png``
(reliability curves). The HTML page references the PNGs by relative name, so the folder can
be opened as is.
"""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np

from aprendiz.training.candidates import is_imbalanced, label_warnings

TABLE_METRICS = (
    "roc_auc", "pr_auc", "f1", "precision", "recall", "recall_at_precision", "brier", "latency_ms", "size_bytes",
)
PLOTS = {"roc.png": "ROC curves (test)", "pr.png": "Precision-recall curves (test)",
         "confusion.png": "Confusion matrix of the best candidate (test)", "calibration.png": "Calibration (test)"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4f}"
    return str(value)


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=90)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _curves(y_test: np.ndarray, curves: dict[str, np.ndarray]) -> dict[str, bytes]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    plots = {}
    plt, fig, ax = _figure()
    for label, p in curves.items():
        fpr, tpr, _ = roc_curve(y_test, p)
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right", fontsize="small")
    plots["roc.png"] = _png(plt, fig)

    plt, fig, ax = _figure()
    for label, p in curves.items():
        precision, recall, _ = precision_recall_curve(y_test, p)
        ax.plot(recall, precision, label=label)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax.legend(loc="lower left", fontsize="small")
    plots["pr.png"] = _png(plt, fig)

    plt, fig, ax = _figure()
    bins = max(3, min(10, len(y_test) // 20))
    for label, p in curves.items():
        observed, predicted = calibration_curve(y_test, np.clip(p, 0, 1), n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title="Calibration (test)")
    ax.legend(loc="upper left", fontsize="small")
    plots["calibration.png"] = _png(plt, fig)
    return plots


def _confusion(confusion: list[list[int]], title: str, labels: tuple[str, str]) -> bytes:
    plt, fig, ax = _figure()
    matrix = np.asarray(confusion)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black", fontsize=14)
    ax.set_xticks([0, 1], [f"pred. {labels[0]}", f"pred. {labels[1]}"])
    ax.set_yticks([0, 1], [f"true {labels[0]}", f"true {labels[1]}"])
    ax.set_title(title)
    return _png(plt, fig)


# With few positives, ROC-AUC flatters a model: precision-recall figures lead the table.
IMBALANCED_FIRST = ("pr_auc", "recall_at_precision")


def table_metrics(y_test: np.ndarray) -> tuple[str, ...]:
    if not is_imbalanced(y_test):
        return TABLE_METRICS
    return (*IMBALANCED_FIRST, *(m for m in TABLE_METRICS if m not in IMBALANCED_FIRST))


def _table(summary: dict[str, Any], candidates: list, champion: dict[str, Any] | None,
           metrics: tuple[str, ...] = TABLE_METRICS) -> tuple[list[str], list[list]]:
    """The candidates table (and the champion's row): header and rows."""
    rows = []
    for c in candidates:
        if c.ok:
            cells = [_fmt(c.test_metrics.get(m, float("nan"))) for m in metrics]
            rows.append([c.name, c.algorithm, _fmt(c.validation_score), _fmt(c.threshold), *cells, _fmt(c.fit_seconds),
                         _fit_rows(c), ""])
        else:
            rows.append([c.name, c.algorithm, *["-"] * (len(metrics) + 2), _fmt(c.fit_seconds), _fit_rows(c),
                         c.error or ""])
    if champion is not None and champion.get("metrics"):
        m = champion["metrics"]
        rows.append([f"champion {champion['version']}", champion.get("algorithm", ""), "-", _fmt(champion.get("threshold", float("nan"))),
                     *[_fmt(m.get(k, float("nan"))) for k in metrics], "-", "-", ""])
    header = ["candidate", "algorithm", f"validation {summary.get('selection_metric')}", "threshold",
              *metrics, "fit s", "fit rows", "error"]
    return header, rows


def _fit_rows(c: Any) -> str:
    """The training rows a candidate was fit on; "N of M (max_train_rows)" when it sampled them."""
    if c.train_rows < c.train_rows_available:
        return f"{c.train_rows:,} of {c.train_rows_available:,} (sample)"
    return f"{c.train_rows:,}" if c.train_rows else "-"


def unlabelled_effect(candidates: list, metric: str) -> str | None:
    """What the unlabelled images changed: the semi-supervised GAN trained with them against the same
    network trained without them (``use_unlabelled: false``) on the same split; None without that pair."""
    gans = [c for c in candidates if c.ok and c.algorithm == "ssgan"]
    with_them = next((c for c in gans if c.params.get("use_unlabelled", True)
                      and c.params.get("unlabelled_images", 1)), None)  # a dataset with none changes nothing
    without = next((c for c in gans if not c.params.get("use_unlabelled", True)), None)
    if with_them is None or without is None:
        return None
    got, base = with_them.test_metrics.get(metric, float("nan")), without.test_metrics.get(metric, float("nan"))
    return (f"{with_them.name} (with the unlabelled images) {metric} {_fmt(got)} against {without.name} (labelled "
            f"images only) {_fmt(base)}: {got - base:+.4f} on the same test images")


def build_report(summary: dict[str, Any], candidates: list, y_test: np.ndarray,
                 champion: dict[str, Any] | None, labels: tuple[str, str]) -> dict[str, bytes]:
    """report.md, report.html and the PNGs. ``champion``: {"version", "metrics", "probabilities"} or None."""
    ok = [c for c in candidates if c.ok]
    curves = {c.name: c.test_probabilities for c in ok}
    if champion is not None and champion.get("probabilities") is not None:
        curves[f"champion {champion['version']}"] = champion["probabilities"]
    files: dict[str, bytes] = {}
    if curves:
        files.update(_curves(y_test, curves))
    best = next((c for c in ok if c.name == summary.get("best_candidate")), None)
    if best is not None:
        files["confusion.png"] = _confusion(best.confusion, f"{best.name} at threshold {best.threshold:.3f} (test)", labels)

    header, rows = _table(summary, candidates, champion, table_metrics(y_test))
    positives = int(np.sum(y_test))

    facts = [
        ("model", summary.get("model")), ("run", summary.get("run_id")),
        ("decision", "promoted" if summary.get("promoted") else "not promoted"),
        ("reason", summary.get("reason")), ("best candidate", summary.get("best_candidate")),
        ("selection metric", summary.get("selection_metric")), ("champion before", summary.get("champion_before")),
        ("rows read", summary.get("rows_read")), ("rows quarantined", summary.get("rows_quarantined")),
        ("duplicates dropped", summary.get("duplicates_dropped")), ("labels corrected by feedback", summary.get("labels_corrected")),
        ("split", summary.get("split")), ("seed", summary.get("seed")), ("data fingerprint", summary.get("data_fingerprint")),
        ("positive rate (test)", f"{positives / max(len(y_test), 1):.1%} ({positives} of {len(y_test)})"),
        *[("warning", w) for w in label_warnings(y_test)],
        *[(f"column left out: {column}", why) for column, why in (summary.get("left_out") or {}).items()],
    ]
    effect = unlabelled_effect(candidates, str(summary.get("selection_metric")))
    if effect:
        facts.append(("what the unlabelled images changed", effect))
    md = [f"# Training report: {summary.get('model')} {summary.get('run_id')}", ""]
    md += [f"- **{k}**: {v}" for k, v in facts]
    md += ["", "## Candidates (test set)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in rows]
    md += ["", "Thresholds are chosen on validation data; metrics are onnxruntime's, on the test set.", ""]
    md += [f"![{title}]({name})" for name, title in PLOTS.items() if name in files]
    files["report.md"] = ("\n".join(md) + "\n").encode("utf-8")

    e = html.escape
    page = ["<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>Training report {e(str(summary.get('model')))} {e(str(summary.get('run_id')))}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
            "img{max-width:48%;margin:4px}</style></head><body>",
            f"<h1>Training report: {e(str(summary.get('model')))} {e(str(summary.get('run_id')))}</h1><ul>"]
    page += [f"<li><b>{e(k)}</b>: {e(str(v))}</li>" for k, v in facts]
    page += ["</ul><h2>Candidates (test set)</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    page += ["<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in row) + "</tr>" for row in rows]
    page += ["</table><p>Thresholds are chosen on validation data; metrics are onnxruntime's, on the test set.</p>"]
    page += [f"<figure><img src='{name}' alt='{e(title)}'><figcaption>{e(title)}</figcaption></figure>"
             for name, title in PLOTS.items() if name in files]
    page += ["</body></html>"]
    files["report.html"] = "\n".join(page).encode("utf-8")
    return files
