"""The capped root's README.txt names every search view, listed or hidden (issue #12)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from dicomfs.core.errors import AnswerCapped, NotFound
from dicomfs.views.guide import GUIDE_FILE
from dicomfs.views.node import Node
from dicomfs.views.root import Root


class CappedTree:
    """A default view whose root the PACS capped; every other path is unknown."""

    mount_time = time.time()

    def lookup(self, path: str) -> Node:
        if path.strip("/"):
            raise AnswerCapped("the PACS capped the answer (0xFE00)")
        return Node("", True, self.mount_time)

    def children(self, node: Node) -> Sequence[Node]:
        raise AnswerCapped("the PACS capped the answer (0xFE00)")

    def cached_size(self, node: Node) -> int | None:
        raise NotFound(node.name)

    def size(self, node: Node, *, walker: int = 0) -> int:
        raise NotFound(node.name)

    def open(self, node: Node, *, reader: int = 0) -> int:
        raise NotFound(node.name)


def guide(root: Root) -> str:
    node = root.lookup("/" + GUIDE_FILE)
    fd = root.open(node)
    try:
        return os.pread(fd, 1 << 16, 0).decode()
    finally:
        os.close(fd)


def test_hidden_views_are_named_in_the_guide_but_not_listed() -> None:
    tree = CappedTree()
    root = Root(tree, hidden={"by-date": tree, "by-uid": tree, ".dicomfs": tree})
    assert [node.name for node in root.children(root.lookup("/"))] == [GUIDE_FILE]
    text = guide(root)
    assert "by-date/YYYY/YYYY-MM/YYYY-MM-DD/" in text and "by-uid/<StudyInstanceUID>/" in text
    assert "no other view" not in text and ".dicomfs" not in text
    assert "0xFE00" in text


def test_views_listed_when_capped_are_listed_beside_the_guide() -> None:
    tree = CappedTree()
    root = Root(tree, hidden={"by-date": tree, "query": tree}, listed_when_capped=["by-date", "query"])
    assert [node.name for node in root.children(root.lookup("/"))] == [GUIDE_FILE, "by-date", "query"]


def test_without_search_views_the_guide_says_so() -> None:
    tree = CappedTree()
    root = Root(tree, hidden={".dicomfs": tree})
    assert "no other view is mounted" in guide(root)
