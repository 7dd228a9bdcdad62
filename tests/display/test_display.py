"""The display helpers: one HTML look (escaped, keys by fingerprint), DataFrames on request, and
progress bars that stay silent where they should."""

from __future__ import annotations

import hashlib
import re
import sys

import pytest

from atoma_lab.display import bars, esc, fingerprint, kv_table, progress, section, table, to_frame
from atoma_lab.display.html import MAX_ROWS, fmt, side_of
from atoma_lab.display.progressbar import in_notebook, progress_disabled
from atoma_lab.protocol.keyring import node_key_id

KEY = bytes(range(32))


def test_a_fingerprint_is_the_start_of_the_key_id_and_not_the_key() -> None:
    fp = fingerprint(KEY)
    assert re.fullmatch(r"[0-9a-f]{4}(:[0-9a-f]{4}){3}", fp)
    assert fp.replace(":", "") == node_key_id(KEY)[:8].hex()
    assert fp.replace(":", "") == hashlib.blake2b(KEY, digest_size=32).hexdigest()[:16]
    assert KEY.hex()[:8] not in fp.replace(":", "")
    assert fingerprint(KEY) != fingerprint(bytes(32))
    with pytest.raises(TypeError):
        fingerprint("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (True, "yes"), (False, "no"), (1234.56789, "1,235"), (0.000123456, "0.0001235"),
    (float("nan"), "—"), (b"\x00" * 32, "<32 bytes>"), (("a", 1), "a, 1"), (7, "7"),
])
def test_cells_are_formatted_and_bytes_shown_by_size_only(value: object, text: str) -> None:
    assert fmt(value) == text


def test_every_value_is_escaped() -> None:
    evil = "<script>alert('x')</script>"
    for html in (kv_table({evil: evil}), table([{"c": evil}]), bars({evil: 1.0}),
                 section(evil, ""), esc(evil)):
        assert "<script>" not in html
        assert "&lt;script&gt;" in html


def test_a_table_takes_mappings_or_sequences_and_counts_what_it_leaves_out() -> None:
    rows = [{"a": i, "b": f"row {i}"} for i in range(MAX_ROWS + 5)]
    html = table(rows, title="t")
    assert html.count("<tr>") == 1 + MAX_ROWS + 1  # the head, the rows, the note
    assert "… and 5 more" in html and ">t</caption>" in html
    assert f"row {MAX_ROWS - 1}" in html and f"row {MAX_ROWS}<" not in html
    assert "<td" in table([(1, 2)], ["x", "y"]) and ">x</th>" in table([(1, 2)], ["x", "y"])
    assert "<thead><tr></tr></thead>" in table([])  # no rows, no columns: still a table


def test_bars_are_as_long_as_their_share_and_coloured_by_side() -> None:
    html = bars({"seal": 1.0, "proxy_check": 2.0, "node_embed": 4.0, "odd": -1.0}, width_px=100)
    widths = [int(w) for w in re.findall(r"width:(\d+)px'></div>", html)]
    assert widths == [25, 50, 100, 0]
    assert [side_of(s) for s in ("seal", "proxy_check", "node_embed")] == ["client", "proxy", "node"]
    assert len(set(re.findall(r"background:(#[0-9a-f]{6})", html))) == 3


def test_to_frame_keeps_its_columns_even_when_empty() -> None:
    frame = to_frame([], ["x", "y"])
    assert list(frame.columns) == ["x", "y"] and len(frame) == 0
    frame = to_frame([{"x": 1, "y": 2}, {"x": 3, "y": 4}], ["y", "x"], index="x")
    assert list(frame.columns) == ["y"] and list(frame.index) == [1, 3]


def test_to_frame_says_how_to_get_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"atoma-lab\[notebooks\]"):
        to_frame([{"x": 1}])


@pytest.mark.parametrize("value", ["1", "true", "True", "yes"])
def test_tqdm_disable_silences_every_bar(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress_disabled()
    with progress(total=3, show=True) as bar:
        assert bar.disable


@pytest.mark.parametrize("value", ["", "0", "false", "off"])
def test_an_unset_tqdm_disable_leaves_bars_to_the_terminal(monkeypatch: pytest.MonkeyPatch,
                                                           value: str) -> None:
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert not progress_disabled()
    assert not in_notebook()  # pytest is no Jupyter kernel
    # Standard error is captured here, not a terminal: tqdm's own rule keeps the bar silent.
    with progress(range(3), desc="x") as bar:
        assert bar.disable
        assert list(bar) == [0, 1, 2]  # and the work still goes through it


def test_show_false_silences_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr("atoma_lab.display.progressbar.in_notebook", lambda: True)
    with progress(total=1, show=False) as bar:
        assert bar.disable
    with progress(total=1, show=True) as bar:  # in a notebook a bar shows whatever the stream
        assert not bar.disable
