"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

TEST_URI = "test:///default"  # libvirt's in-process fake driver: nothing boots


@pytest.fixture
def fake_libvirt() -> Iterator[libvirt.virConnect]:
    """A connection to the fake driver, left as found: it keeps its domains for the process."""
    connection = libvirt.open(TEST_URI)
    before = {dom.name() for dom in connection.listAllDomains()}
    try:
        yield connection
    finally:
        for dom in connection.listAllDomains():
            if dom.name() not in before:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        connection.close()


@pytest.fixture
def conn(fake_libvirt: libvirt.virConnect) -> libvirt.virConnect:
    return fake_libvirt
