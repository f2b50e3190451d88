"""The case page viewer on a full-size DICOM: how long until it can be windowed, and one re-window.

    DATABASE_URL=... CELERY_BROKER_URL=... .venv/bin/python -m benchmarks.viewer [--size 1841x1955] [--runs 5]

A 12-bit chest DX of the given size (a real radiograph from tests/resources, upscaled, values
0..4095) is stored through the upload service; Django's live-server thread serves the platform
and headless Chromium (the tests' browser) opens the case page `--runs` times. Measured:
  render 16-bit   server: the first request of /images/<id>/pixels/ (read the DICOM, write the
                  16-bit PNG to storage, send it), then a later one (sent from storage);
  viewer ready    browser: from the start of the fetch to the first windowed picture (fetch,
                  decode of the 16-bit PNG in JavaScript, first render), with each part;
  re-window       browser: one window/level change (look-up table + canvas), what a drag costs
                  per frame; median of 40 changes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1841x1955", help="columns x rows")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    columns, rows = (int(part) for part in args.size.split("x"))

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-viewer-"))
    setup_django(scratch)

    import numpy as np
    from django.conf import settings
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test import Client
    from django.test.testcases import LiveServerThread
    from PIL import Image as PILImage
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from accounts.models import Department, User
    from diagnosis import services
    from diagnosis.models import Modality, Patient
    from tests.dicom_files import make_dicom, upload

    settings.ALLOWED_HOSTS = ["*"]
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False

    with PILImage.open(ROOT / "tests" / "resources" / "kermany_normal_1.jpg") as picture:
        grey = picture.convert("L").resize((columns, rows), PILImage.Resampling.BILINEAR)
    pixels = (np.asarray(grey, dtype=np.uint16) * 16).astype(np.uint16)  # 12 bits
    data = make_dicom(pixels, window=(2048, 2048), patient_id="BENCH-VIEW", patient_name="Bench^Viewer")

    department, _ = Department.objects.get_or_create(name="Benchmark viewer")
    user, _ = User.objects.get_or_create(username="bench-viewer", defaults={"department": department})
    patient, _ = Patient.objects.get_or_create(
        department=department, mrn="BENCH-VIEW", defaults={"name": "Viewer Bench", "created_by": user}
    )
    case = services.case_create(patient=patient, modality=Modality.XRAY, created_by=user)
    image = services.images_upload(case=case, files=[upload(data)], uploaded_by=user)[0].image

    client = Client()
    client.force_login(user)
    pixels_url = f"/images/{image.pk}/pixels/"
    # Warm-up: the first request of a process imports every view module (seconds on a busy CPU).
    b"".join(client.get(f"/images/{image.pk}/file/").streaming_content)
    started = time.perf_counter()
    first = client.get(pixels_url)
    size = len(b"".join(first.streaming_content))
    first_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    b"".join(client.get(pixels_url).streaming_content)
    stored_ms = (time.perf_counter() - started) * 1000

    server = LiveServerThread("127.0.0.1", StaticFilesHandler, connections_override={}, port=0)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    base = f"http://127.0.0.1:{server.port}"

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1200")
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    readies, fetches, decodes, firsts, rewindows = [], [], [], [], []
    try:
        driver.get(f"{base}/accounts/login/")
        driver.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value, "path": "/"})
        for _ in range(args.runs):
            driver.get(f"{base}/cases/{case.pk}/")
            WebDriverWait(driver, 120).until(
                lambda d: d.execute_script("return document.querySelector('.viewer').dataset.ready") == "true"
            )
            timings = driver.execute_script("return window.xnetReader.viewport().timings")
            readies.append(timings["readyMs"])
            fetches.append(timings["fetchMs"])
            decodes.append(timings["decodeMs"])
            firsts.append(timings["readyMs"] - timings["fetchMs"] - timings["decodeMs"])
            rewindows.extend(
                driver.execute_script(
                    """
                    const v = window.xnetReader.viewport(), times = [];
                    for (let i = 0; i < 40; i++) {
                      v.window = {center: 1000 + 20 * i, width: 1500 + 10 * i};
                      v.render();
                      times.push(v.timings.renderMs);
                    }
                    return times;
                    """
                )
            )
    finally:
        driver.quit()
        server.terminate()

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):7.0f} ms"

    print(f"DICOM {columns} x {rows}, 12 bits; 16-bit PNG {size / 1e6:.2f} MB; {args.runs} page loads")
    print(f"server  first pixels request (render + store + send) {first_ms:7.0f} ms")
    print(f"server  later request (from storage)                 {stored_ms:7.0f} ms")
    print(f"browser viewer ready (median)                        {median(readies)}")
    print(f"          fetch                                      {median(fetches)}")
    print(f"          decode 16-bit PNG                          {median(decodes)}")
    print(f"          first render                               {median(firsts)}")
    print(f"browser re-window, one change (median of {len(rewindows)})        {median(rewindows)}")
    print(machine())


if __name__ == "__main__":
    main()
