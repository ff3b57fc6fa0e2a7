"""The operator's copy of every FineTuneJob it watches: the newest slim body of each, by (namespace, name).

Filled from the watch (``handlers.py``) and from the operator's own writes: a status write returns the
object as stored, which the watch delivers only later. Without that, a Job event right after our own
write found the run missing from the copy and read the FineTuneJob from the API server again (325
GETs at ~270 ms each in a burst of 500). The newest resourceVersion wins, so a late watch event
never replaces a fresher body.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from finetune_api.lenient import copy_json

Key = tuple[str | None, str]


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What status decisions need, without managedFields and bookkeeping annotations (memory)."""
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    meta["annotations"] = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("kopf.") and k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": copy_json(meta),
        "spec": copy_json(dict(body.get("spec") or {})),
        "status": copy_json(dict(body.get("status") or {})),
    }


def _version(body: Mapping[str, Any]) -> int | None:
    value = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdecimal() and value.isascii() else None


class FtjIndex(dict[Key, list[dict[str, Any]]]):
    """A dict (key -> [slim body]) that the event loop and worker threads both offer bodies to."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def offer(self, body: Mapping[str, Any], insert: bool = True) -> dict[str, Any] | None:
        """Keep ``body`` (slimmed) unless the index holds a newer version; the body kept, or None.

        resourceVersions are etcd revisions, one counter for the resource type, so they also order a
        deleted object against a new one of the same name. ``insert=False`` (what the operator itself
        wrote or read) only refreshes an object the watch has shown and not deleted since: a write
        that returns after the object was deleted must not bring it back.
        """
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace"), str(meta.get("name")))
        new = slim(body)
        mine = _version(new)
        with self._lock:
            held = next(iter(self.get(key, ())), None)
            if held is None and not insert:
                return None
            if held is not None and not insert and _uid(held) != meta.get("uid"):
                return None
            theirs = _version(held) if held is not None else None
            if mine is not None and theirs is not None and theirs > mine:
                return None
            self[key] = [new]
        return new

    def drop(self, key: Key, uid: str | None) -> bool:
        """Forget ``key`` if it is the object ``uid`` (a late DELETED of an older object of the same
        name must not remove the new one); whether it was dropped."""
        with self._lock:
            held = next(iter(self.get(key, ())), None)
            if held is not None and uid is not None and _uid(held) != uid:
                return False
            self.pop(key, None)
            return True


def _uid(body: Mapping[str, Any]) -> str | None:
    uid = (body.get("metadata") or {}).get("uid")
    return str(uid) if uid is not None else None
