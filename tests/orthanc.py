"""A real Orthanc PACS for the DICOM tests: started on free ports with a generated configuration.

XNET is registered as a DICOM modality ("xnet"), the REST API listens on loopback without
authentication, storage is a temporary folder. Stop and start again keep the same ports and
storage (a PACS that was down for a while).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.workers import free_port, wait_for

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


@dataclass
class Orthanc:
    folder: Path
    xnet_ae: str
    xnet_port: int
    ae_title: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def configure(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "xnet-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {"xnet": [self.xnet_ae, "127.0.0.1", self.xnet_port]},
            "DicomScuTimeout": 30,
            "Plugins": [],
            "StableAge": 1,
            "SaveJobs": False,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, *, timeout: float = 30) -> Orthanc:
        assert self.process is None, "already running"
        config = self.configure()
        self.process = subprocess.Popen(
            [ORTHANC, str(config)],
            stdout=(self.folder / "orthanc.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, timeout=timeout, what=f"Orthanc on port {self.http_port}", log=self.log)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        try:
            self.get("/system")
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def log(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # REST --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310 - http://127.0.0.1
        if body is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            return response.read()

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path)

    def post(self, path: str, payload) -> object:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        content_type = "application/dicom" if isinstance(payload, bytes) else "application/json"
        raw = self._request("POST", path, body, content_type)
        return json.loads(raw) if raw.strip() else None

    def upload(self, data: bytes) -> str:
        """Store a DICOM file in Orthanc; its Orthanc instance id."""
        return self.post("/instances", data)["ID"]

    def store_to_xnet(self, resources: list[str], *, timeout: int = 60):
        """Orthanc sends these resources to XNET by C-STORE (raises HTTPError when XNET refuses)."""
        return self.post("/modalities/xnet/store", {"Resources": resources, "Synchronous": True, "Timeout": timeout})

    def instances_in_study(self, study_uid: str) -> list[dict]:
        found = self.post(
            "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        )
        return found

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get_bytes(f"/instances/{orthanc_id}/file")
