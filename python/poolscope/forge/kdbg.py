"""KDDEBUGGER_DATA64 encoding (Win8+ KdpDataBlockEncoded) and the KdCopyDataBlock snippet.

Spec: shared/specs/dump-format.md section 4. Per 8-byte little-endian word:

    decode: t = w ^ N; t = rol64(t, N & 0xFF); t ^= A; t = bswap64(t); plain = t ^ W
    encode: w = N ^ ror64(A ^ bswap64(W ^ plain), N & 0x3F)

with N = value of nt!KiWaitNever, W = value of nt!KiWaitAlways and A = the VA of
nt!KdpDataBlockEncoded. (Rotating by ``N & 0xFF`` equals rotating by ``N & 0x3F``.)
"""

from __future__ import annotations

import struct

MASK64 = (1 << 64) - 1
_Q = struct.Struct("<Q")
_I = struct.Struct("<i")
_U = struct.Struct("<I")


def rol64(x: int, n: int) -> int:
    n &= 63
    return ((x << n) | (x >> (64 - n))) & MASK64 if n else x & MASK64


def ror64(x: int, n: int) -> int:
    return rol64(x, 64 - (n & 63))


def bswap64(x: int) -> int:
    return int.from_bytes((x & MASK64).to_bytes(8, "little"), "big")


def encode_word(plain: int, wait_never: int, wait_always: int, flag_va: int) -> int:
    return wait_never ^ ror64(flag_va ^ bswap64(wait_always ^ plain), wait_never & 0x3F)


def decode_word(word: int, wait_never: int, wait_always: int, flag_va: int) -> int:
    t = rol64(word ^ wait_never, wait_never & 0xFF)
    return bswap64(t ^ (flag_va & MASK64)) ^ wait_always


def encode_block(plain: bytes, wait_never: int, wait_always: int, flag_va: int) -> bytes:
    """Encode ``len(plain) // 8`` words (``len`` must be a multiple of 8)."""
    if len(plain) % 8:
        raise ValueError("KDBG block length must be a multiple of 8")
    out = bytearray(len(plain))
    for off in range(0, len(plain), 8):
        w = encode_word(_Q.unpack_from(plain, off)[0], wait_never, wait_always, flag_va)
        _Q.pack_into(out, off, w)
    return bytes(out)


def decode_block(encoded: bytes, wait_never: int, wait_always: int, flag_va: int) -> bytes:
    if len(encoded) % 8:
        raise ValueError("KDBG block length must be a multiple of 8")
    out = bytearray(len(encoded))
    for off in range(0, len(encoded), 8):
        p = decode_word(_Q.unpack_from(encoded, off)[0], wait_never, wait_always, flag_va)
        _Q.pack_into(out, off, p)
    return bytes(out)


def _rel32(target: int, end_of_insn: int) -> bytes:
    d = target - end_of_insn
    if not -(1 << 31) <= d < (1 << 31):
        raise ValueError("rel32 out of range")
    return _I.pack(d)


def kd_copy_data_block_code(
    code_va: int, flag_va: int, kdbg_va: int, never_va: int, always_va: int, size: int
) -> bytes:
    """A KdCopyDataBlock-like snippet (what scanners look for, spec section 4):

    cmp byte [rip+KdpDataBlockEncoded], 0 ; jz done ; lea rdx, [rip+KdDebuggerDataBlock]
    mov r10, [rip+KiWaitNever] ; mov r11, [rip+KiWaitAlways] ; mov ecx, size/8 ;
    mov eax, size ; nop dword [rax+0] ; done: ret
    """
    c = bytearray()
    c += b"\x80\x3d" + _rel32(flag_va, code_va + 7) + b"\x00"  # cmp byte [rip+x], 0
    jz_at = len(c)
    c += b"\x74\x00"  # jz done (patched below)
    c += b"\x48\x8d\x15" + _rel32(kdbg_va, code_va + len(c) + 7)  # lea rdx, [rip+x]
    c += b"\x4c\x8b\x15" + _rel32(never_va, code_va + len(c) + 7)  # mov r10, [rip+x]
    c += b"\x4c\x8b\x1d" + _rel32(always_va, code_va + len(c) + 7)  # mov r11, [rip+x]
    c += b"\xb9" + _U.pack(size // 8)  # mov ecx, size/8
    c += b"\xb8" + _U.pack(size)  # mov eax, size
    c += b"\x0f\x1f\x40\x00"  # nop dword [rax+0]
    c[jz_at + 1] = len(c) - (jz_at + 2)
    c += b"\xc3"  # ret
    return bytes(c)
