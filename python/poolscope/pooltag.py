"""Pool tag descriptions: the ``pooltag.txt`` format that ships with the Debugging Tools
(``<tag> - <binary> - <description>``, comment lines starting ``rem`` or ``//``, tags that may be
shorter than four characters or end in ``?``/``*`` wildcards), and a small built-in table of
common kernel tags written from public documentation."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TagInfo:
    tag: str
    binary: str
    description: str


# Common tags, from Microsoft's public pooltag.txt entries and driver documentation.
BUILTIN: tuple[TagInfo, ...] = (
    TagInfo("Leak", "myfault.sys", "NotMyFault test driver: leaked pool (Sysinternals)"),
    TagInfo("Thre", "nt!ps", "Thread objects"),
    TagInfo("Proc", "nt!ps", "Process objects"),
    TagInfo("Pool", "nt!ex", "Pool tables, etc."),
    TagInfo("MmSt", "nt!mm", "Mm section object prototype ptes"),
    TagInfo("MmCa", "nt!mm", "Mm control areas for mapped files"),
    TagInfo("File", "nt!io", "File objects"),
    TagInfo("Irp ", "nt!io", "Io, IRP packets"),
    TagInfo("Even", "nt!ex", "Event objects"),
    TagInfo("Mutx", "nt!ex", "Mutant objects"),
    TagInfo("Sema", "nt!ex", "Semaphore objects"),
    TagInfo("Toke", "nt!se", "Token objects"),
    TagInfo("ObNm", "nt!ob", "Object Manager names"),
    TagInfo("ObDi", "nt!ob", "Object directory"),
    TagInfo("CM31", "nt!cm", "Internal Configuration manager allocations"),
    TagInfo("EtwB", "nt!etw", "Etw Buffer"),
    TagInfo("EtwR", "nt!etw", "Etw KM RegEntry"),
    TagInfo("ConT", "<unknown>", "Connection tracking"),
    TagInfo("NtFs", "ntfs.sys", "StrucSup.c"),
    TagInfo("Ntfx", "ntfs.sys", "General Allocation"),
    TagInfo("FMfn", "fltmgr.sys", "NAME_CACHE_NODE structure"),
    TagInfo("Vad ", "nt!mm", "Mm virtual address descriptors"),
    TagInfo("VadS", "nt!mm", "Mm virtual address descriptors (short)"),
    TagInfo("Ntf0", "ntfs.sys", "General pool allocation"),
    TagInfo("nVsC", "nvlddmkm.sys", "NVIDIA video driver"),
    TagInfo("netv", "netvsc.sys", "Hyper-V network virtual service client (netvsc)"),
    TagInfo("MmRe", "nt!mm", "ASLR relocation blocks"),
    TagInfo("Ddk ", "<unknown>", "Default for driver allocated memory (user's of ntddk.h)"),
    TagInfo("None", "<unknown>", "call to ExAllocatePool"),
    TagInfo("Vi52", "nt!Vf", "Driver Verifier pool tracking data"),
)


class TagTable:
    """Exact tags first, then wildcard patterns (``Afd?``, ``Aml*``), as pooltag.txt allows."""

    def __init__(self, entries: list[TagInfo] | tuple[TagInfo, ...] = BUILTIN) -> None:
        self.exact: dict[str, TagInfo] = {}
        self.patterns: list[TagInfo] = []
        for e in entries:
            self.add(e)

    def add(self, e: TagInfo) -> None:
        if e.tag.endswith(("?", "*")):
            self.patterns.append(e)
        else:
            self.exact[e.tag.ljust(4)] = e

    def lookup(self, tag: str) -> TagInfo | None:
        hit = self.exact.get(tag.ljust(4))
        if hit is not None:
            return hit
        return next((p for p in self.patterns if fnmatch.fnmatchcase(tag, p.tag)), None)

    def describe(self, tag: str) -> str:
        info = self.lookup(tag)
        if info is None:
            return f"UNKNOWN pooltag '{tag}', please update pooltag.txt"
        return f"{info.binary} - {info.description}" if info.binary else info.description

    @classmethod
    def load(cls, path: str | Path | None) -> TagTable:
        """The built-in table, overlaid with a pooltag.txt file when given."""
        table = cls()
        if path is not None:
            for e in parse(Path(path).read_text(encoding="utf-8", errors="replace")):
                table.add(e)
        return table


def parse(text: str) -> list[TagInfo]:
    out: list[TagInfo] = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.lower().startswith("rem") or s.startswith("//") or line[0] in " \t":
            continue
        parts = [p.strip() for p in s.split(" - ", 2)]
        if len(parts) < 2 or not parts[0] or len(parts[0]) > 4:
            continue
        binary, desc = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[1])
        out.append(TagInfo(parts[0], binary, desc))
    return out
