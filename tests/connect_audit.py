"""Every ``socket.connect`` this process makes, seen by a Python audit hook (PEP 578).

    with audited_connects(unreachable={"93.184.216.34"}) as connects:
        ...                       # code under test
    assert connects == [...]      # every address a socket of this process connected to

The hook sees the address a socket is really asked to reach, below any library: it is how a
test shows that no connection was ever opened to an address. ``unreachable`` addresses are
refused there (``ENETUNREACH``), standing in for the internet a test must not reach. An audit
hook cannot be removed: it is installed once and does nothing unless a test armed it.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import threading
from collections.abc import Iterable, Iterator

_lock = threading.Lock()
_state: dict[str, object] = {"armed": False, "connects": [], "unreachable": frozenset()}
_installed = False


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event != "socket.connect" or not _state["armed"]:
        return
    address = args[1]
    host = str(address[0]) if isinstance(address, tuple) else str(address)
    with _lock:
        _state["connects"].append(host)  # type: ignore[attr-defined]
    if host in _state["unreachable"]:  # type: ignore[operator]
        raise OSError(errno.ENETUNREACH, f"{host} is unreachable from the tests")


@contextlib.contextmanager
def audited_connects(unreachable: Iterable[str] = ()) -> Iterator[list[str]]:
    """The addresses connected to while the block runs (a list filled as they happen)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    connects: list[str] = []
    _state.update(connects=connects, unreachable=frozenset(unreachable), armed=True)
    try:
        yield connects
    finally:
        _state["armed"] = False
