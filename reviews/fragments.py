"""The case page's sign-off block, registered with diagnosis.fragments (see ReviewsConfig.ready)."""

from __future__ import annotations

from typing import Any

from diagnosis.fragments import CaseFragment, register
from reviews.forms import signoff_context

SIGNOFF = "signoff"


def _signed(context: dict[str, Any]) -> bool:
    return context.get("report") is not None


def register_fragments() -> None:
    register(
        CaseFragment(
            name=SIGNOFF,
            template="reviews/_signoff.html",
            context=signoff_context,
            freezes=_signed,
            refresh_when_finished=True,
        )
    )
