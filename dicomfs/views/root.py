"""The mount's root: views composed by top-level name, as ratarmount composes its subvolumes.

One view is the default and fills the root itself (the patient hierarchy, so ``/`` lists
patients as it always has); every other view appears as a directory of its own at the root
(``/by-date``, ``/by-uid`` later). A mounted view's name hides a default entry of the same name.
A *hidden* mount (the control directory ``/.dicomfs``) is reached by its name but not listed.
The default view's nodes pass through untouched; a mounted view's nodes carry their view in their
``ref`` (:class:`_Mounted`), so every call finds its way back to the view that made the node.

When the default view cannot list the root for its size (``AnswerCapped``: past ``rootlimit``, or
capped or refused by the PACS), the root lists the mounted views and ``README.txt``
(:mod:`dicomfs.views.guide`) instead of a partial list, and a name below it that is no view is
``NotFound`` (the catalog logged the cap once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from dicomfs.core.errors import AnswerCapped, NotFound
from dicomfs.views.attributes import record_attributes
from dicomfs.views.control import sealed_memfd
from dicomfs.views.guide import GUIDE_FILE, guide_text
from dicomfs.views.node import Node, View


@dataclass(frozen=True)
class _Mounted:
    """The ref of a mounted view's node: the view, and the node as the view made it."""

    view: View
    node: Node


#: The ref of the root node itself.
_ROOT = object()


@dataclass(frozen=True)
class _Guide:
    """The ref of ``README.txt``: its text, fixed when the node is made (size and reads agree)."""

    text: bytes


class Root:
    """A :class:`~dicomfs.views.node.Namespace` of views, by top-level name.

    Parameters
    ----------
    default : View
        Fills the root: a path whose first part is no mounted view's name is the default view's.
    mounts : Mapping[str, View]
        Top-level directory name -> the view shown below it (safe file names, no ``/``).
    hidden : Mapping[str, View]
        As ``mounts``, but left out of the root's listing (``ls -a`` does not show them).
    listed_when_capped : Sequence[str]
        Names of ``hidden`` that the root lists when the default view cannot list it for its
        size (``AnswerCapped``): then they are the way in, beside ``README.txt``.
    """

    def __init__(
        self,
        default: View,
        mounts: Mapping[str, View] = MappingProxyType({}),
        hidden: Mapping[str, View] = MappingProxyType({}),
        listed_when_capped: Sequence[str] = (),
    ) -> None:
        self._default = default
        self._listed = list(mounts)
        self._listed_when_capped = [name for name in listed_when_capped if name in hidden]
        self._mounts = {**mounts, **hidden}
        self.mount_time = default.mount_time

    def lookup(self, path: str) -> Node:
        """The node at ``path``: the root, a mounted view's node, or the default view's."""
        parts = [part for part in path.split("/") if part]
        if not parts:
            return Node("", True, self.mount_time, ref=_ROOT)
        view = self._mounts.get(parts[0])
        if view is None:
            try:
                return self._default.lookup(path)
            except AnswerCapped as exc:
                if parts == [GUIDE_FILE]:
                    return self._guide(exc)
                raise NotFound(path) from exc
        node = view.lookup("/" + "/".join(parts[1:]))
        if len(parts) == 1:  # the view's own root, shown under its name
            node = replace(node, name=parts[0])
        return _wrap(view, node)

    def children(self, node: Node) -> Sequence[Node]:
        """A directory's entries, sorted by name (the root: the default's, then mounted views')."""
        if node.ref is _ROOT:
            hidden = self._mounts.keys()
            try:
                listed = self._default.children(self._default.lookup("/"))
            except AnswerCapped as exc:
                entries = [self._guide(exc), *(self.lookup(name) for name in self._listed_when_capped)]
            else:
                entries = [child for child in listed if child.name not in hidden]
            entries += [self.lookup(name) for name in self._listed]
            return sorted(entries, key=lambda child: child.name)
        if isinstance(node.ref, _Mounted):
            view = node.ref.view
            return [_wrap(view, child) for child in view.children(node.ref.node)]
        return self._default.children(node)

    def _guide(self, capped: AnswerCapped) -> Node:
        # Every search view it can name, listed or hidden: hidden ones are reached by name too.
        text = guide_text(str(capped), list(self._mounts))
        # Volatile: a reason that changes gives new text; front ends must not keep the old one.
        return Node(GUIDE_FILE, False, self.mount_time, ref=_Guide(text), volatile=True)

    def cached_size(self, node: Node) -> int | None:
        """As the node's own view answers it."""
        if isinstance(node.ref, _Guide):
            return len(node.ref.text)
        view, own = self._owner(node)
        return view.cached_size(own)

    def size(self, node: Node, *, walker: int = 0) -> int:
        """As the node's own view answers it."""
        if isinstance(node.ref, _Guide):
            return len(node.ref.text)
        view, own = self._owner(node)
        return view.size(own, walker=walker)

    def open(self, node: Node, *, reader: int = 0) -> int:
        """As the node's own view answers it."""
        if isinstance(node.ref, _Guide):
            return sealed_memfd("dicomfs-readme", node.ref.text)
        view, own = self._owner(node)
        return view.open(own, reader=reader)

    def attributes(self, node: Node) -> Mapping[str, str]:
        """The identity of the entry from the record its view keeps in it (no query)."""
        return record_attributes(self._owner(node)[1].ref)

    def _owner(self, node: Node) -> tuple[View, Node]:
        if isinstance(node.ref, _Mounted):
            return node.ref.view, node.ref.node
        return self._default, node


def _wrap(view: View, node: Node) -> Node:
    return replace(node, ref=_Mounted(view, node))
