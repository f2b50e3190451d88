"""`diagnosis` is the lower app: the apps built on it (sign-off, FHIR, webhooks, audit, model
operations, DICOM networking) may import it, never the other way round. The case page is composed
from fragments those apps register (diagnosis.fragments), and their API routes are mounted by
xnet_site/urls.py, so diagnosis needs none of them.

Checked on the source (every import statement, also inside functions, and dotted names passed to
import_module or include()), so a lazy import cannot hide a dependency either.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Apps that build on diagnosis (they import it), in INSTALLED_APPS after it.
HIGHER_APPS = ("reviews", "fhir_api", "webhooks", "audit", "modelops", "dicomnet")


def _top(name: str | None) -> str:
    return (name or "").split(".")[0]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, plus string literals that name a module for
    importlib.import_module() or django's include()."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in {"import_module", "include", "__import__"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((node.lineno, first.value))
    return found


def test_the_scanner_sees_every_kind_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import reviews.forms\n"
        "from reviews import api\n"
        "def later():\n"
        "    from audit.models import AuditEvent\n"
        "    importlib.import_module('modelops.services')\n"
        "urlpatterns = [path('x/', include('webhooks.urls'))]\n"
        "from . import sibling\n"
    )
    modules = {_top(module) for _, module in imported_modules(sample)}
    assert modules == {"reviews", "audit", "modelops", "webhooks"}


def test_diagnosis_imports_no_app_built_on_it():
    offending = []
    for path in sorted((ROOT / "diagnosis").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for line, module in imported_modules(path):
            if _top(module) in HIGHER_APPS:
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offending == []


def test_diagnosis_templates_include_no_template_of_those_apps():
    include = re.compile(r"""{%\s*(?:include|extends)\s+["']([a-z_]+)/""")
    offending = []
    for path in sorted((ROOT / "templates" / "diagnosis").rglob("*.html")):
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            offending.extend(
                f"{path.relative_to(ROOT)}:{number} includes {app}/..."
                for app in include.findall(text)
                if app in HIGHER_APPS
            )
    assert offending == []


def test_the_sign_off_block_reaches_the_case_page_through_the_registry():
    from diagnosis import fragments

    names = {fragment.name: fragment for fragment in fragments.registered()}
    assert names["signoff"].template == "reviews/_signoff.html"
    assert names["signoff"].context.__module__ == "reviews.forms"
