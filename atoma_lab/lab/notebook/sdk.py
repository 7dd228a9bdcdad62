"""The official atoma-sdk in its own interpreter against an HTTP network."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atoma_lab.client import DEFAULT_MODEL

SDK_PYTHON_ENV = "ATOMA_LAB_SDK_PYTHON"


def repo_root() -> Path:
    """The checkout atoma_lab runs from (an editable install: the folder above the package)."""
    return Path(__file__).resolve().parents[3]


SDK_ROUNDTRIP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from atoma_sdk import AtomaSDK
    url, key, model, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    sdk = AtomaSDK(bearer_auth=key, server_url=url)
    conf = sdk.confidential_embeddings.create(input=texts, model=model)
    plain = sdk.embeddings.create(input_=texts, model=model)
    print(json.dumps({
        "confidential": [d.embedding for d in sorted(conf.data, key=lambda d: d.index)],
        "confidential_usage": conf.usage.total_tokens,
        "plain": [d.embedding for d in sorted(plain.data, key=lambda d: d.index)],
        "plain_usage": plain.usage.total_tokens,
    }))
    """
)


def sdk_python() -> Path | None:
    """The official SDK's interpreter: ``$ATOMA_LAB_SDK_PYTHON``, else ``<repo>/.venv-sdk``;
    ``None`` when it is not there (``make sdk-setup`` creates it).

    A relative ``$ATOMA_LAB_SDK_PYTHON`` (the Makefile passes ``.venv-sdk/bin/python``) is taken
    from the working directory, else from the repository root: notebooks run in ``notebooks/``.
    """
    configured = os.environ.get(SDK_PYTHON_ENV)
    python = Path(configured) if configured else repo_root() / ".venv-sdk" / "bin" / "python"
    if not python.is_absolute() and not python.exists():
        python = repo_root() / python
    return python if python.exists() else None


def sdk_roundtrip(python: Path | str, *, base_url: str, api_key: str, texts: Sequence[str],
                  model: str = DEFAULT_MODEL, timeout_s: float = 300.0) -> dict[str, Any]:
    """Confidential and plain embeddings of ``texts`` through the unmodified atoma-sdk, run by
    ``python`` against ``base_url``: vectors as ``(n, d)`` float32 arrays and usages."""
    done = subprocess.run(
        [str(python), "-c", SDK_ROUNDTRIP_SCRIPT, base_url, api_key, model, json.dumps(list(texts))],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the atoma-sdk round trip failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout)
    for name in ("confidential", "plain"):
        got[name] = np.asarray(got[name], dtype=np.float32)
    return got
