"""Argument types of the ``poolscope`` command: each validates its text and says what it wants.

argparse reports an ``ArgumentTypeError`` as ``argument --flag: <message>``, so every refusal
names the flag; a plain ``ValueError`` would print "invalid <function name> value". Nothing here
imports more than the standard library (the command's start-up pays for every import).
"""

from __future__ import annotations

import argparse
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_TAG_RULE = (
    "a pool tag is 1 to 4 characters (shorter tags are padded with spaces, as WinDbg does); "
    "WinDbg's wildcards are allowed: * (any characters) and ? (one character); or 0x and the "
    "tag's number"
)


def parse_size(text: str) -> int:
    """``123``, ``64K``, ``512M``, ``64G``, ``1T`` (binary units; ``KB``/``KiB`` too) → bytes."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (bytes, or a number with K, M, G or T: 512M, 64G)"
        )
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_address(text: str) -> int:
    """An address: ``0xfffffa80...`` (or a decimal number), hex digits such as ``fffffa80...``,
    or WinDbg's ``fffffa80`1234abcd``."""
    s = text.strip().replace("`", "")
    value = -1
    for base in (0, 16):
        try:
            value = int(s, base)
            break
        except ValueError:
            continue
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(
            f"not an address: {text!r} (hexadecimal, e.g. 0xfffffa8003c5e000 or fffffa80`03c5e000)"
        )
    return value


def parse_tag(text: str) -> str:
    """A pool tag as ``!poolfind`` takes it: 1 to 4 characters, ``*`` and ``?`` wildcards."""
    if re.fullmatch(r"0x[0-9a-fA-F]{1,8}", text):  # a tag as its number, as the core takes it
        return text
    literal = text.replace("*", "")
    if not text or len(literal) > 4 or (not has_wildcard(text) and len(text) > 4):
        raise argparse.ArgumentTypeError(f"not a pool tag: {text!r}: {_TAG_RULE}")
    if not text.isascii() or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"not a pool tag: {text!r}: tags are printable ASCII characters"
        )
    return text


def has_wildcard(tag: str) -> bool:
    return "*" in tag or "?" in tag


def tag_matcher(pattern: str) -> re.Pattern[str]:
    """The compiled match of a tag pattern against a tag (trailing spaces ignored on both
    sides; case-sensitive, as pool tags are)."""
    out = []
    for ch in pattern.rstrip():
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r" *\Z", re.DOTALL)


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def count(text: str) -> int:
    """An integer of at least 0."""
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a count (an integer of 0 or more): {text!r}")
    return value


def seconds(text: str) -> float:
    """A non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def share(text: str) -> float:
    """A share between 0 and 1 (``0.5``, or ``50%``)."""
    s = text.strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"not a share between 0 and 1: {text!r} (e.g. 0.5)")
    return value
