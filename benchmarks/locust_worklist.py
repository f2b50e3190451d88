"""Locust users of benchmarks/worklist_load.py (run by it; not a test of its own).

Each simulated radiologist loops without pause over the worklist page and the API case list:
the first page, a job-status filter, a record-number search, a reading-status filter, and one
step of a walk through every page by the "next" links (page by page to the end, then from the
start again), so deep pages are read as often as a user paging through would read them. The
links followed are the ones the server returns, so the same users measure page numbers (before)
and keyset cursors (after). Every response time is written to XNET_LOCUST_TIMES (JSON) at the end.
"""

from __future__ import annotations

import html
import json
import os
import re

from locust import FastHttpUser, constant, events, task

SESSION = os.environ.get("XNET_LOCUST_SESSION", "")
TOKEN = os.environ.get("XNET_LOCUST_TOKEN", "")
SEARCH = os.environ.get("XNET_LOCUST_SEARCH", "BW00012")
TIMES: list[tuple[str, float, int]] = []
NEXT_LINK = re.compile(r'<a[^>]*href="([^"]+)"[^>]*>\s*Next')


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None, **kwargs) -> None:
    status = getattr(response, "status_code", 0) if exception is None else 0
    TIMES.append((name, response_time, status))


@events.quitting.add_listener
def _write(environment, **kwargs) -> None:
    path = os.environ.get("XNET_LOCUST_TIMES")
    if path:
        with open(path, "w") as out:
            json.dump(TIMES, out)


class Radiologist(FastHttpUser):
    wait_time = constant(0)  # closed loop: each user sends its next request when the last returns

    def on_start(self) -> None:
        self.page_headers = {"Cookie": f"sessionid={SESSION}"}
        self.api_headers = {"Authorization": f"Token {TOKEN}", "Accept": "application/json"}
        self.page_next = "/"
        self.api_next = "/api/v1/cases/"

    def page(self, url: str, name: str) -> str:
        with self.client.get(url, headers=self.page_headers, name=name, catch_response=True) as response:
            if response.status_code != 200 or b"data-case-id" not in (response.content or b""):
                response.failure(f"{response.status_code}")
            return response.text or ""

    def api(self, url: str, name: str) -> dict:
        with self.client.get(url, headers=self.api_headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
                return {}
            return response.json()

    @task
    def worklist(self) -> None:
        self.page("/", "page first")
        self.page("/?status=failed", "page status filter")
        self.page(f"/?q={SEARCH}", "page search")
        self.page("/?reading=unsigned", "page unsigned")
        text = self.page(self.page_next, "page next")
        found = NEXT_LINK.search(text)
        self.page_next = "/" + html.unescape(found.group(1)).lstrip("/") if found else "/"

        self.api("/api/v1/cases/", "api first")
        self.api("/api/v1/cases/?status=failed", "api status filter")
        body = self.api(self.api_next, "api next")
        following = body.get("next")
        self.api_next = following.split("://", 1)[-1].split("/", 1)[-1] if following else "api/v1/cases/"
        self.api_next = "/" + self.api_next.lstrip("/")
