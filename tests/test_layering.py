"""The layering of atoma_lab, checked on its source with ``ast`` (ARCHITECTURE.md, "The shape").

Rules:

1. A module imports only ``atoma_lab`` modules of its own layer or a lower one (``LAYERS``).
2. ``crypto/`` and ``protocol/`` are sans-IO: they import only modules on ``PURE_ALLOWED``
   (``PURE_FORBIDDEN`` names the usual suspects for a clear message) and never call ``open``,
   ``print``, ``input`` and friends.
3. Only ``inference/`` imports torch, transformers, sentence_transformers, onnx or onnxruntime.
4. ``import atoma_lab`` (and its crypto, protocol and inference packages) leaves torch,
   transformers, onnx, onnxruntime, httpx and ray out of ``sys.modules``, and neither it nor the
   modules a notebook displays from (client, network, ledger, load, attacks, benchmark report)
   import pandas or tqdm (checked in a fresh interpreter).

The checker is tested on synthetic sources first, so that a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "atoma_lab"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

# The layers, low to high. A module's layer is the folder it sits in under atoma_lab/ (so a new
# module is placed by where it is put); the few modules at the package top name their own. A
# module may import its own layer and lower ones. A folder or top module not listed counts as the
# top layer, so a lower layer importing one fails until it is given a place here.
LAYERS: dict[str, int] = {
    "errors": 0,  # the exception tree
    "encoding": 0,  # strict base64, canonical JSON
    "display": 0,  # HTML pieces, DataFrames and progress bars for notebooks (pandas, tqdm lazily)
    "crypto": 10,  # one room per primitive
    "protocol": 20,  # wire models, Atoma's envelope, the hardened profile
    "inference": 30,  # engines, batching, remote backends
    "transport": 40,  # the Transport seam and its implementations
    "services": 50,  # node, proxy, ledger, metrics
    "server": 60,  # ASGI app, runners, standalone processes
    "client": 70,  # sync and async clients
    "lab": 80,  # network builder, attacks, load, measurement, notebook helpers
    "tools": 90,  # developer tools (benchmark report, notebook runner)
    "cli": 90,
    "__main__": 100,
    "__init__": 100,  # the package root re-exports; nothing inside may import it
}
# The only modules at the package top; everything else lives in a layer's folder.
TOP_MODULES = frozenset({"__init__", "__main__", "client", "cli", "encoding", "errors"})
MAX_TOP_MODULES = 6
TOP_LAYER = max(LAYERS.values())

PURE_PACKAGES = ("crypto", "protocol")
# Modules outside those folders that the pure layers import, held to the same rules.
PURE_MODULES = frozenset({"atoma_lab.display.html"})
PURE_FORBIDDEN = frozenset(
    {
        "os", "sys", "io", "pathlib", "socket", "ssl", "select", "selectors", "asyncio",
        "threading", "multiprocessing", "subprocess", "time", "datetime", "random", "logging",
        "http", "urllib", "httpx", "requests", "sqlite3", "torch", "transformers",
        "sentence_transformers", "onnx", "onnxruntime", "uvicorn", "starlette", "fastapi",
    }
)
PURE_ALLOWED = frozenset(
    {
        "__future__", "hashlib", "hmac", "secrets", "base64", "binascii", "math", "json",
        "dataclasses", "enum", "typing", "collections", "struct", "zlib", "abc", "functools",
        "itertools", "re", "cryptography", "orjson", "numpy",
        "blake3", "operator", "string", "types",  # pure too, beyond the brief's list
        "html",  # escaping for the _repr_html_ of verified reports and quotes
        "dcap_qvl",  # TDX quote verification (Rust, no I/O when given collateral); imported lazily
    }
)
FORBIDDEN_CALLS = frozenset({"open", "print", "input", "breakpoint", "exec", "eval", "__import__"})
HEAVY = frozenset({"torch", "transformers", "sentence_transformers", "onnx", "onnxruntime"})
HEAVY_OWNER = "inference"


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: [{self.rule}] {self.detail}"


def layer_of(top: str) -> int:
    return LAYERS.get(top, TOP_LAYER)


def _top_level(module: str) -> str:
    """``atoma_lab.crypto.keys`` -> ``crypto``; ``atoma_lab`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(base) - 1:
        raise ValueError(f"relative import beyond the package in {module}")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every module an AST imports, absolute, with its line (function-level imports included)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            found.append((base, node.lineno))
            # `from atoma_lab import crypto` / `from . import aead` import submodules too.
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return found


def check_source(source: str, module: str, *, is_package: bool = False) -> list[Violation]:
    """All rule violations in the source of ``module`` (a dotted name under atoma_lab)."""
    tree = ast.parse(source, filename=module)
    top = _top_level(module)
    pure = top in PURE_PACKAGES or module in PURE_MODULES
    out: list[Violation] = []
    for name, line in imported_modules(tree, module, is_package):
        root = name.split(".")[0]
        if root == PACKAGE:
            parts = name.split(".")
            if len(parts) == 1:
                continue  # `from atoma_lab import x`: x is checked as atoma_lab.x below
            target = parts[1]
            if target not in LAYERS and len(parts) == 2 and not _is_module(target):
                target = "__init__"  # a name re-exported by the package root
            if target != top and layer_of(target) > layer_of(top):
                out.append(Violation(module, line, "layer", f"imports {name} (layer {target!r})"))
            continue
        if pure and root in PURE_FORBIDDEN:
            out.append(Violation(module, line, "io", f"pure layer imports {root}"))
        elif pure and root not in PURE_ALLOWED:
            out.append(Violation(module, line, "io", f"pure layer imports {root} (not allowed)"))
        if root in HEAVY and top != HEAVY_OWNER:
            out.append(Violation(module, line, "heavy", f"imports {root} outside {HEAVY_OWNER}/"))
    if pure:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                out.append(Violation(module, node.lineno, "io", f"calls {node.func.id}()"))
    return out


def _is_module(name: str) -> bool:
    return (PACKAGE_DIR / f"{name}.py").exists() or (PACKAGE_DIR / name).is_dir()


def package_modules() -> list[tuple[str, Path, bool]]:
    """(dotted name, path, is_package) of every .py file under atoma_lab/."""
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out.append((".".join(parts), path, is_package))
    return out


def check_package() -> tuple[list[Violation], list[str]]:
    violations: list[Violation] = []
    checked = []
    for module, path, is_package in package_modules():
        violations += check_source(path.read_text(encoding="utf-8"), module, is_package=is_package)
        checked.append(module)
    return violations, checked


# ----------------------------------------------------------------------------------------------
# The checker catches what it should (synthetic sources) ...
# ----------------------------------------------------------------------------------------------


def _rules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    return {v.rule for v in check_source(textwrap.dedent(source), module, is_package=is_package)}


@pytest.mark.parametrize("name", sorted(PURE_FORBIDDEN))
@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_checker_catches_io_imports_in_pure_layers(name, package):
    module = f"atoma_lab.{package}.m"
    assert "io" in _rules(f"import {name}\n", module)
    assert "io" in _rules(f"from {name} import x\n", module)
    assert "io" in _rules(f"import {name}.sub as s\n", module)
    assert "io" in _rules(f"def f():\n    import {name}\n", module)  # lazy imports too


@pytest.mark.parametrize("name", ["shutil", "tempfile", "ctypes", "pickle", "importlib", "builtins"])
def test_checker_catches_imports_off_the_allow_list(name):
    assert _rules(f"import {name}\n", "atoma_lab.crypto.m") == {"io"}


@pytest.mark.parametrize("source", ["import os\n", "import pandas\n", "from tqdm import tqdm\n",
                                    "def f():\n    print(1)\n"])
def test_checker_holds_the_pure_display_module_to_the_pure_rules(source):
    assert _rules(source, "atoma_lab.display.html") == {"io"}
    assert _rules(source, "atoma_lab.display.progressbar") == set()  # not a pure module


@pytest.mark.parametrize("call", ["open('f')", "print(1)", "input()", "__import__('os')", "eval('1')"])
def test_checker_catches_io_builtins_in_pure_layers(call):
    assert _rules(f"def f():\n    return {call}\n", "atoma_lab.protocol.m") == {"io"}
    assert _rules(f"x = {call}\n", "atoma_lab.services.m") == set()  # only pure layers


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("atoma_lab.crypto.keys", "from atoma_lab.protocol.atoma import envelope"),
        ("atoma_lab.crypto.keys", "import atoma_lab.inference.engine"),
        ("atoma_lab.crypto.keys", "from atoma_lab import server"),
        ("atoma_lab.crypto.keys", "from ..protocol.envelope import seal_request"),
        ("atoma_lab.crypto.keys", "from .. import services"),
        ("atoma_lab.crypto.keys", "from atoma_lab import X25519KeyPair"),  # the package root
        ("atoma_lab.errors", "from atoma_lab.crypto import keys"),
        ("atoma_lab.display.html", "from atoma_lab.crypto.keys import X25519KeyPair"),
        ("atoma_lab.encoding", "import atoma_lab.crypto"),
        ("atoma_lab.protocol.atoma.envelope", "from atoma_lab.inference import engine"),
        ("atoma_lab.protocol.atoma.envelope", "from atoma_lab.services.trace import Trace"),
        ("atoma_lab.protocol", "from .. import client"),
        ("atoma_lab.inference.engine", "from atoma_lab.services.node import NodeService"),
        ("atoma_lab.inference.engine", "import atoma_lab.transport"),
        ("atoma_lab.inference.engine", "from atoma_lab.server import app"),
        ("atoma_lab.inference.engine", "from atoma_lab.client import AtomaLabClient"),
        ("atoma_lab.inference.engine", "from atoma_lab.lab.network import local_network"),
        ("atoma_lab.inference.engine", "from atoma_lab import cli"),
        ("atoma_lab.transport.http", "from atoma_lab.services.node import NodeService"),
        ("atoma_lab.transport.base", "from atoma_lab.services.routing import Router"),
        ("atoma_lab.services.proxy", "from atoma_lab.lab.network import Network"),
        ("atoma_lab.lab.network", "from atoma_lab.tools.benchreport import main"),
        ("atoma_lab.transport.http", "from atoma_lab.server.app import asgi_app"),
        ("atoma_lab.server.app", "from atoma_lab.client import AtomaLabClient"),
        ("atoma_lab.client", "from atoma_lab.lab.network import local_network"),
        ("atoma_lab.lab.network", "from atoma_lab.cli import main"),
        ("atoma_lab.services.node", "from atoma_lab.newthing import x"),  # unknown = top layer
    ],
)
def test_checker_catches_upward_imports(module, source):
    assert "layer" in _rules(source + "\n", module, is_package=module == "atoma_lab.protocol")


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("atoma_lab.services.node", "import torch"),
        ("atoma_lab.client", "from transformers import AutoModel"),
        ("atoma_lab.protocol.openai", "import sentence_transformers"),
        ("atoma_lab.services.node", "import onnxruntime as ort"),
        ("atoma_lab.cli", "from onnxruntime.quantization import quantize_dynamic"),
        ("atoma_lab.server.app", "def f():\n    import onnx"),
    ],
)
def test_checker_catches_heavy_imports_outside_inference(module, source):
    assert "heavy" in _rules(source + "\n", module)


# ----------------------------------------------------------------------------------------------
# ... and does not cry wolf.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("atoma_lab.crypto.keys", "from __future__ import annotations"),
        ("atoma_lab.crypto.keys", "import hashlib, hmac, secrets"),
        ("atoma_lab.crypto.keys", "from cryptography.hazmat.primitives import hashes"),
        ("atoma_lab.crypto.keys", "from collections.abc import Callable"),
        ("atoma_lab.crypto.keys", "from atoma_lab.errors import InvalidPublicKeyError"),
        ("atoma_lab.crypto.keys", "from atoma_lab.encoding import b64decode"),
        ("atoma_lab.protocol.atoma.messages", "from atoma_lab.display.html import kv_table"),
        ("atoma_lab.crypto.keys", "from . import aead"),
        ("atoma_lab.crypto.keys", "from .aead import AesGcmKey"),
        ("atoma_lab.crypto", "from .keys import X25519KeyPair"),
        ("atoma_lab.crypto", "from . import keys"),
        ("atoma_lab.protocol.atoma.envelope", "from atoma_lab.crypto.aead import AesGcmKey"),
        ("atoma_lab.protocol.atoma.envelope", "from ..crypto import keys"),
        ("atoma_lab.protocol.atoma.envelope", "import numpy as np\nimport orjson"),
        ("atoma_lab.protocol.atoma.envelope", "def f(x):\n    return x.open()"),  # a method, not open()
        ("atoma_lab.inference.engine", "import torch\nfrom atoma_lab.protocol import openai"),
        ("atoma_lab.services.node", "import time, asyncio, os\nfrom atoma_lab.services.trace import T"),
        ("atoma_lab.server.app", "import logging\nfrom atoma_lab.services.node import NodeService"),
        ("atoma_lab.lab.network", "from atoma_lab.client import AtomaLabClient"),
        ("atoma_lab", "from atoma_lab.lab.network import local_network\nfrom . import client"),
    ],
)
def test_checker_accepts_allowed_imports(module, source):
    is_package = module in ("atoma_lab", "atoma_lab.crypto")
    assert check_source(source + "\n", module, is_package=is_package) == []


def test_relative_imports_resolve_against_the_package():
    tree = ast.parse("from . import aead\nfrom ..protocol import envelope\nfrom .keys import X\n")
    names = [name for name, _ in imported_modules(tree, "atoma_lab.crypto.kdf", False)]
    assert "atoma_lab.crypto.aead" in names
    assert "atoma_lab.protocol.envelope" in names
    assert "atoma_lab.crypto.keys" in names
    tree = ast.parse("from .keys import X\n")
    names = [name for name, _ in imported_modules(tree, "atoma_lab.crypto", True)]
    assert names == ["atoma_lab.crypto.keys", "atoma_lab.crypto.keys.X"]


# ----------------------------------------------------------------------------------------------
# The real package
# ----------------------------------------------------------------------------------------------


def test_atoma_lab_respects_its_layers():
    violations, checked = check_package()
    # The walk really saw the package (so an empty result means something).
    assert "atoma_lab.crypto.keys" in checked and "atoma_lab.encoding" in checked
    assert not violations, "\n" + "\n".join(map(str, violations))


def test_every_folder_and_top_module_has_a_layer():
    """A new folder (layer) or top-level module is placed in LAYERS deliberately."""
    tops = {_top_level(module) for module, _, _ in package_modules()}
    assert tops - set(LAYERS) == set(), "add these to LAYERS in tests/test_layering.py"


def test_the_package_top_holds_few_modules_and_the_rest_are_folders():
    """``ls atoma_lab/`` shows the layers: at most six modules sit at the top, each on purpose."""
    top_files = {p.stem for p in PACKAGE_DIR.glob("*.py")}
    assert len(top_files) <= MAX_TOP_MODULES, sorted(top_files)
    assert top_files == TOP_MODULES, "move new modules into the folder of their layer"
    folders = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert folders and folders <= set(LAYERS), sorted(folders - set(LAYERS))
    # Each folder is one layer; the layer of a module deep inside is still its top folder's.
    assert _top_level("atoma_lab.protocol.atoma.envelope") == "protocol"
    assert layer_of("lab") > layer_of("client") > layer_of("server") > layer_of("services")


_IMPORT_PROBE = """
import importlib, json, sys
absent = []
for name in ("atoma_lab", "atoma_lab.crypto", "atoma_lab.protocol", "atoma_lab.inference"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        absent.append(name)
heavy = sorted(m for m in ("torch", "transformers", "httpx", "pandas", "tqdm", "ray", "onnx",
                            "onnxruntime")
               if m in sys.modules)
for name in ("atoma_lab.client", "atoma_lab.display", "atoma_lab.lab.network", "atoma_lab.lab.load",
             "atoma_lab.lab.attacks", "atoma_lab.lab.measure", "atoma_lab.services.ledger",
             "atoma_lab.tools.benchreport", "atoma_lab.cli"):
    importlib.import_module(name)
displayed = sorted(m for m in ("pandas", "tqdm", "torch", "ray") if m in sys.modules)
print(json.dumps({"absent": absent, "heavy": heavy, "displayed": displayed}))
"""


def test_importing_atoma_lab_stays_light():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        capture_output=True,
        text=True,
        cwd=PACKAGE_DIR.parent,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "atoma_lab" not in result["absent"]
    assert result["heavy"] == [], f"importing atoma_lab pulled in {result['heavy']}"
    assert result["displayed"] == [], f"importing the display modules pulled in {result['displayed']}"
