"""The real access logs in data/corpus (provenance and licences in its README)."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.log"))


def corpus_lines(path: Path) -> list[bytes]:
    """The file's lines as bytes, without their line ends."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]
