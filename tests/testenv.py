"""Loaded by pytest (`-p tests.testenv`) before Django reads its settings.

The suite runs on the production parts: PostgreSQL and Redis on this machine. Any variable
already set in the environment wins, so CI or a developer can point elsewhere.
"""

import os
import tempfile

_scratch = tempfile.mkdtemp(prefix="xnet-tests-")

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/xnet")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("XNET_VAR_DIR", os.path.join(_scratch, "var"))
os.environ.setdefault("XNET_MEDIA_ROOT", os.path.join(_scratch, "media"))
os.environ.setdefault("XNET_MODEL_DIR", os.path.join(_scratch, "no-models"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
