"""The isolated backend's helper process: ``python -m looming.ffi.helper``.

It connects to its channel, receives the description (pickled by the parent,
which is the trusted side), links it with the dynamic backend, confines
itself (:mod:`looming.ffi.confine`: namespaces, user, resource limits,
Landlock, the syscall filter), says it is ready, with warnings for any layer
the kernel refused, then serves calls until the channel closes. A crash
here ends only the helper.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pickle
import sys
from typing import Any

from looming.ffi import syscalls
from looming.ffi.channel import Channel, ChannelClosed, connect
from looming.ffi.codec import (
    CALLABLE,
    Address,
    CallableMarker,
    PointedTo,
    WireHandle,
    Writable,
    decode,
    decode_all,
    encode_message,
)
from looming.ffi.confine import (
    Confinement,
    Layers,
    apply_limits,
    confine_server,
    enter_process_tree,
)
from looming.ffi.description import Bindings, Function
from looming.ffi.dynamic import DynamicLibrary, LocalMemory
from looming.ffi.errors import FfiError
from looming.ffi.types import (
    Buffer,
    Callback,
    CType,
    Handle,
    Memory,
    Opaque,
    Pointer,
    Record,
    c_uchar,
    packed,
)
from looming.unix.time import UnixTime


class AddressMemory(Memory):
    """A Memory naming an address the client holds; only its address is used."""

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        return ctypes.string_at(
            self.address + offset, self.size - offset if length is None else length
        )

    def write(self, data: bytes, offset: int = 0) -> None:
        ctypes.memmove(self.address + offset, bytes(data), len(data))


class HelperServer:
    """Serves one linked description over one channel."""

    def __init__(self, channel: Channel, bindings: Bindings) -> None:
        self.channel = channel
        self.bindings = bindings
        for function in bindings.functions:
            # The caller decides what counts as failure; here every result goes back.
            function.error_when = None
        self.library = DynamicLibrary(bindings, check_layout=False, check_declarations=False)
        self.functions = [getattr(self.library, f.name) for f in bindings.functions]
        self.opaque_index = {id(o): i for i, o in enumerate(bindings.opaques)}
        self.blocks: dict[int, LocalMemory] = {}
        # The arguments that need work here; the others pass as they arrived.
        self.prepared_arguments = [
            [i for i, t in enumerate(f.args) if isinstance(t, Buffer | Pointer | Callback)]
            for f in bindings.functions
        ]

    # -- values to and from the wire ----------------------------------------

    def make_handle(self, index: int, address: int) -> Handle:
        return Handle(self.bindings.opaques[index], address, self.library.origin)

    def to_wire(self, value: Any, ctype: CType) -> Any:
        if isinstance(value, Handle):
            return WireHandle(self.opaque_index[id(value.kind)], value.address)
        if isinstance(ctype, Record) and isinstance(value, dict):
            return packed(ctype, value, "result")
        if isinstance(value, list):
            return [self.to_wire(v, ctype) for v in value]
        if isinstance(value, dict):
            return {k: self.to_wire(v, ctype) for k, v in value.items()}
        return value

    def argument(self, ctype: CType, value: Any, index: int, function: Function) -> tuple[Any, Any]:
        """(what the dynamic backend gets, what to read back after the call)."""
        if isinstance(ctype, Buffer):
            if type(value) is Writable:
                data = bytearray(value)
                return data, data
            if type(value) is Address:
                return int(value), None
            return value, None
        if isinstance(ctype, Pointer):
            if type(value) is PointedTo:
                block = LocalMemory(c_uchar, max(len(value), 1), self.library.origin)
                block.write(bytes(value))
                block.ctype = ctype.target
                return block, block
            if type(value) is Address:
                return AddressMemory(ctype.target, 1, int(value), self.library.origin), None
            return value, None
        if isinstance(ctype, Callback):
            if isinstance(value, CallableMarker):
                return self.callback_proxy(ctype, index), None
            return value, None
        return value, None

    def callback_proxy(self, ctype: Callback, index: int) -> Any:
        def proxy(*args: Any) -> Any:
            wire_args = [self.to_wire(a, t) for a, t in zip(args, ctype.args, strict=True)]
            self.channel.send(encode_message(b"K", index, wire_args))
            # Serve nested requests (a callback calling the library) until the answer.
            while True:
                message = self.channel.recv()
                if message[:1] == b"k":
                    # When the callable raised, the caller sent the error value
                    # and raises the exception itself once the call returns.
                    _ok, value = decode_all(message, 1)
                    return value
                self.dispatch(message)

        return proxy

    # -- requests -------------------------------------------------------------

    def call(self, message: bytes) -> None:
        index, args = decode_all(message, 1, self.make_handle)
        function = self.bindings.functions[index]
        prepared: list[Any] = list(args)
        read_back: list[Any] = [None] * len(args)
        for i in self.prepared_arguments[index]:
            prepared[i], read_back[i] = self.argument(function.args[i], args[i], i, function)
        error: str | None = None
        errno = 0
        result: Any = None
        try:
            result = self.functions[index](*prepared)
        except Exception as exc:  # reported to the caller, who raises it
            error = f"{type(exc).__name__}: {exc}"
        if function.errno:
            errno = self.library.last_errno
        if error is not None:
            self.channel.send(encode_message(b"E", error))
            return
        backs = [
            None if back is None else bytes(back) if isinstance(back, bytearray) else back.read()
            for back in read_back
        ]
        returns = function.returns
        self.channel.send(
            encode_message(
                b"R",
                errno,
                result if type(result) is int else self.to_wire(result, returns),
                backs,
            )
        )

    def memory(self, tag: bytes, message: bytes) -> None:
        values = decode_all(message, 1)
        if tag == b"A":
            (size,) = values
            block = LocalMemory(c_uchar, max(int(size), 1), self.library.origin)
            self.blocks[block.address] = block
            reply: Any = block.address
        elif tag == b"D":
            self.blocks.pop(int(values[0]), None)
            reply = None
        elif tag == b"G":
            address, length = values
            reply = ctypes.string_at(address, length)
        elif tag == b"P":
            address, data = values
            ctypes.memmove(address, data, len(data))
            reply = None
        else:  # b"S"
            address, length = values
            reply = ctypes.string_at(address, -1 if length is None else length)
        self.channel.send(encode_message(b"r", reply))

    def dispatch(self, message: bytes) -> None:
        tag = message[:1]
        if tag == b"C":
            self.call(message)
        elif tag == b"F":  # blocks the caller dropped; no answer
            for address in decode_all(message, 1)[0]:
                self.blocks.pop(int(address), None)
        elif tag in (b"A", b"D", b"G", b"P", b"S"):
            self.memory(tag, message)
        else:
            self.channel.send(encode_message(b"E", f"unknown request {tag!r}"))

    def serve(self) -> None:
        while True:
            try:
                message = self.channel.recv()
            except ChannelClosed:
                return
            if message[:1] == b"Q":
                return
            self.dispatch(message)


outer_pid = 0


def confine(config: dict[str, Any], bindings: Bindings, caller_pid: int) -> list[str]:
    """Apply the confinement layers; in the serving process, the warnings to report."""
    confinement: Confinement = config.get("confinement") or Confinement.none()
    layers = Layers(confinement)
    if confinement.seccomp is not None or confinement.namespaces:
        try:
            syscalls.table()  # read now: files are out of reach once confined
        except FfiError as exc:
            layers.refused(f"no system call table ({exc})")
    enter_process_tree(layers, caller_pid)
    global outer_pid
    try:  # /proc is the caller's: it names this process as the caller sees it
        outer_pid = int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        outer_pid = os.getpid()
    limits = config.get("limits")
    if limits is not None:
        apply_limits(limits.address_space, limits.cpu_seconds, limits.open_files, limits.processes)
    readable = (*bindings.paths, *confinement.paths)
    writable = (*bindings.writable_paths, *confinement.writable_paths)
    confine_server(layers, readable, writable)
    return layers.warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m looming.ffi.helper")
    parser.add_argument("--channel", required=True, help="module:function:argument")
    options = parser.parse_args(argv)
    # The helper is a host process of its own: it measures on the host's time.
    channel = connect(options.channel, time=UnixTime())
    setup = channel.recv()
    if setup[:1] != b"B":
        return 2
    config: dict[str, Any] = pickle.loads(setup[1:])
    try:
        server = HelperServer(channel, config["bindings"])
    except Exception as exc:
        channel.send(encode_message(b"E", f"{type(exc).__name__}: {exc}"))
        return 1
    try:
        warnings = confine(config, config["bindings"], int(config.get("caller") or os.getppid()))
    except Exception as exc:  # a layer refused under strict=True, or a bad user name
        channel.send(encode_message(b"X", f"{type(exc).__name__}: {exc}"))
        return 1
    channel.send(encode_message(b"Y", outer_pid, warnings))
    server.serve()
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    sys.exit(main())


__all__ = ["CALLABLE", "HelperServer", "Opaque", "decode", "main"]
