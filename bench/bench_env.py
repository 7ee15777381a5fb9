"""What every benchmark here needs before its imports: the project's folders on sys.path
and dummy credentials, so no benchmark can reach a real AWS account."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def prepare(*folders: str) -> Path:
    """Put ROOT/<folder> first on sys.path for each folder, set dummy credentials; ROOT."""
    sys.path[:0] = [str(ROOT / folder) for folder in folders]
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    return ROOT
