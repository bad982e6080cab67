"""Classic BPF socket filters (linux/filter.h) for the lab's packet sockets."""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence
from typing import Final

SO_ATTACH_FILTER: Final = 26
"""include/uapi/asm-generic/socket.h."""

Instruction = tuple[int, int, int, int]
"""(code, jump if true, jump if false, k), as ``struct sock_filter`` holds them."""


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Attach ``program`` to ``sock`` (the kernel copies it: the buffer may go once
    attached)."""
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
