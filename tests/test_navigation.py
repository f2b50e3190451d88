"""The main menu offers each page to the people it serves, and only to them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

ADMIN_ONLY = ('href="/models/"', 'href="/webhooks/"', 'href="/audit/"')


def test_radiologists_see_the_dicom_intake_but_no_admin_pages(rad_client):
    page = rad_client.get("/").content.decode()
    assert 'href="/dicom/"' in page
    for link in ADMIN_ONLY:
        assert link not in page


def test_department_admins_reach_models_webhooks_and_dicom(client, department_admin):
    client.force_login(department_admin)
    page = client.get("/").content.decode()
    for link in (*ADMIN_ONLY, 'href="/dicom/"'):
        assert link in page
    for path in ("/models/", "/webhooks/", "/dicom/"):
        assert client.get(path).status_code == 200, path
