"""The embedded on-disk broker: kombu's filesystem transport, made safe against crashes.

kombu's filesystem transport deletes a message file as soon as a consumer reads it, so a process
killed before acking (SIGKILL, OOM, power loss) loses every message it had taken. Here a message
read is moved into ``inflight/<pid>/`` instead and deleted only when it is acked, rejected or
handed back; a process that starts finds the in-flight files of processes that no longer exist
and returns them to the queue under their original names, so they keep their place.

For one machine only: liveness is judged by process id on this host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from pathlib import Path
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

SCHEME = "order-sync-fs"
INFLIGHT = "inflight"
_sequence = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_abandoned(queue_folder: Path) -> int:
    """Return the in-flight messages of dead processes to the queue; how many were returned."""
    returned = 0
    inflight = queue_folder.parent / INFLIGHT
    if not inflight.is_dir():
        return 0
    for owner in inflight.iterdir():
        if not owner.name.isdigit() or _alive(int(owner.name)):
            continue
        for message in owner.iterdir():
            with contextlib.suppress(FileNotFoundError):
                message.rename(queue_folder / message.name)
                returned += 1
        with contextlib.suppress(OSError):
            owner.rmdir()
    return returned


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflight_files: dict[str, Path] = {}
        self._own_inflight = Path(self.data_folder_in).parent / INFLIGHT / str(os.getpid())
        recover_abandoned(Path(self.data_folder_in))

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        suffix = f"{queue}.msg"
        folder = Path(self.data_folder_in)
        self._own_inflight.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != suffix:
                continue
            taken = self._own_inflight / name
            try:
                # Atomic on one file system: of two consumers, one wins and the other moves on.
                (folder / name).rename(taken)
            except OSError:
                continue
            payload = loads(bytes_to_str(taken.read_bytes()))
            tag = payload.get("properties", {}).get("delivery_tag")
            if tag is None:
                taken.unlink(missing_ok=True)  # cannot be acked, so cannot be tracked
            else:
                self._inflight_files[tag] = taken
            return payload
        raise virtual.Empty()

    def _settled(self, delivery_tag: str) -> None:
        path = self._inflight_files.pop(delivery_tag, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._settled(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        self._settled(delivery_tag)

    def _restore(self, message: Any) -> None:
        # Back under its own name, so it keeps its place in the queue.
        path = self._inflight_files.pop(message.delivery_tag, None)
        if path is None or not path.exists():
            super()._restore(message)
            return
        path.rename(Path(self.data_folder_in) / path.name)

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        # kombu names files by the millisecond and a random id, so messages published within
        # one millisecond come out in random order; nanoseconds and a counter keep them FIFO.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_sequence):012d}.{queue}.msg"
        target = Path(self.data_folder_out) / name
        partial = target.with_suffix(".part")
        partial.write_bytes(str_to_bytes(dumps(payload)))
        partial.rename(target)  # readers never see a half-written message


class Transport(filesystem.Transport):
    Channel = Channel
    driver_name = SCHEME

    # kombu keeps one declaration cache per process for every filesystem broker; with two
    # folders in one process, a binding declared for the first is never written to the second
    # and its messages are routed nowhere. One cache per control folder instead.
    _states: dict[str, virtual.BrokerState] = {}

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        folder = str(client.transport_options.get("control_folder", "control"))
        self.state = self._states.setdefault(folder, virtual.BrokerState())


def register() -> None:
    """Let kombu (and so Celery) open ``order-sync-fs://`` URLs in this process."""
    TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
