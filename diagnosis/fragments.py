"""Blocks of the case page that other apps own, filled in by those apps.

The case page belongs to `diagnosis`, but parts of it do not: the sign-off block is `reviews`'.
`diagnosis` must not import the apps built on it, so they register a fragment here from their
AppConfig.ready(): a template and a function that gives its context. The case page and the status
JSON render whatever is registered, in a named slot, without knowing which app it came from.

A fragment may also say whether the case is frozen (signed): the page then offers no upload or
withdrawal. `state` carries a fragment's own bound forms back into the page when one of its views
re-renders the case page with errors (reviews' sign and addendum views do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.template.loader import render_to_string

from diagnosis.models import Case


@dataclass(frozen=True)
class CaseFragment:
    """One block of the case page: `context(case=, user=, **state) -> dict` feeds `template`."""

    name: str
    template: str
    context: Callable[..., dict[str, Any]]
    # "after_images" (below the viewer), the only slot the page has today.
    slot: str = "after_images"
    # Whether the fragment's context means the case is frozen (e.g. a signed report).
    freezes: Callable[[dict[str, Any]], bool] | None = None
    # Sent fresh with the status JSON once every job has finished (the AI result may change it).
    refresh_when_finished: bool = False


_fragments: dict[str, CaseFragment] = {}


def register(fragment: CaseFragment) -> None:
    """Called from an AppConfig.ready(); registering the same name again replaces it."""
    _fragments[fragment.name] = fragment


def registered() -> list[CaseFragment]:
    return list(_fragments.values())


@dataclass(frozen=True)
class RenderedFragment:
    name: str
    slot: str
    html: str
    frozen: bool


def render_case_fragments(
    request: HttpRequest,
    case: Case,
    *,
    finished: bool,
    state: dict[str, dict[str, Any]] | None = None,
    only_refreshed: bool = False,
) -> list[RenderedFragment]:
    """Each registered fragment rendered for this case and user (with its own `state`, if any)."""
    state = state or {}
    rendered = []
    for fragment in _fragments.values():
        if only_refreshed and not fragment.refresh_when_finished:
            continue
        context = fragment.context(case=case, user=request.user, **state.get(fragment.name, {}))
        html = render_to_string(fragment.template, {"case": case, "finished": finished, **context}, request=request)
        frozen = bool(fragment.freezes and fragment.freezes(context))
        rendered.append(RenderedFragment(name=fragment.name, slot=fragment.slot, html=html, frozen=frozen))
    return rendered
