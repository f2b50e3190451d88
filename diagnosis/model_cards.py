"""The model card page's content: CARD.md as training/report.py writes it, shaped for the page.

The page already heads the card with the model's name, its intended use and its limitations
(from model.json), so CARD.md's own title, intended-use paragraph and Limitations section are
left out rather than shown twice; its Training data section is a JSON dump, which the page
shows as tables built from model.json's training counts instead. Everything else (the figures,
the leave-one-source-out and test-split tables, the gate) is CARD.md's Markdown as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import markdown

SPLITS = (("train", "Training"), ("val", "Validation"), ("test", "Test"))
_HEADING = re.compile(r"^##\s+(.*?)\s*$")


@dataclass
class TrainingData:
    """Images per split and class, and per source, class and split."""

    splits: list[tuple[str, str]]  # (key, heading) of the splits the model has
    classes: list[str]
    by_split: list[dict] = field(default_factory=list)  # {"split", "total", "counts": [per class]}
    by_source: list[dict] = field(default_factory=list)  # {"source", "label", "counts": [per split]}


def training_data(meta: dict, classes: list[str]) -> TrainingData | None:
    """model.json's training counts as table rows; None when they are missing or not in the
    shape training/report.py writes (the card's own section is kept then)."""
    counts = (meta.get("training") or {}).get("counts") if isinstance(meta.get("training"), dict) else None
    if not isinstance(counts, dict):
        return None
    splits = [(key, heading) for key, heading in SPLITS if isinstance(counts.get(key), dict)]
    if not splits or not all(isinstance(counts[key].get("per_class"), dict) for key, _ in splits):
        return None
    known = set(classes)
    extra = sorted({label for key, _ in splits for label in counts[key]["per_class"]} - known)
    labels = [*classes, *extra]
    data = TrainingData(splits=splits, classes=labels)
    for key, heading in splits:
        per_class = counts[key]["per_class"]
        data.by_split.append(
            {"split": heading, "total": counts[key].get("total"), "counts": [per_class.get(label) for label in labels]}
        )
    sources = sorted({source for key, _ in splits for source in (counts[key].get("per_source") or {})})
    for source in sources:
        for label in labels:
            row = [(counts[key].get("per_source") or {}).get(source, {}).get(label) for key, _ in splits]
            if any(row):
                data.by_source.append({"source": source, "label": label, "counts": row})
    return data


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, lines) per "## " section; the text before the first one has heading ""."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            sections.append((match.group(1), [line]))
        else:
            sections[-1][1].append(line)
    return sections


def card_html(text: str, *, shown_by_page: set[str], training_table: bool) -> str:
    """CARD.md as HTML without what the page shows already. `shown_by_page`: "title",
    "intended_use", "limitations"; `training_table`: the page shows the training data as tables."""
    kept: list[str] = []
    for heading, lines in _sections(text):
        name = heading.lower()
        if name == "limitations" and "limitations" in shown_by_page:
            continue
        if name == "training data" and training_table:
            continue
        if not heading:
            if "title" in shown_by_page:
                lines = [line for line in lines if not line.startswith("# ")]
            if "intended_use" in shown_by_page:
                lines = [line for line in lines if not line.startswith("**Intended use.**")]
        kept.extend(lines)
    # CARD.md comes from the model folder, which the operator installs (trusted), not from users.
    return markdown.markdown("\n".join(kept), extensions=["tables", "fenced_code"])
