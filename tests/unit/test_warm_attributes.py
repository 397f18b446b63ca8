"""chainlab.warm.attributes: what a served command takes on from its caller."""

from __future__ import annotations

import os
import resource

import pytest

from chainlab.warm import attributes


def test_taking_on_ones_own_attributes_changes_nothing() -> None:
    before = attributes.collect()
    attributes.take_on(before)
    assert attributes.collect() == before


def test_collected_attributes_are_this_processes() -> None:
    got = attributes.collect()
    assert got["limits"]["RLIMIT_NOFILE"] == list(resource.getrlimit(resource.RLIMIT_NOFILE))
    assert got["nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert got["groups"][:2] == [os.getgid(), os.getegid()]


def test_a_cgroup_outside_its_hierarchy_is_refused() -> None:
    wanted = attributes.collect()
    wanted["cgroups"] = "0::/../../../etc\n"
    with pytest.raises(ValueError, match="outside its hierarchy|no mount"):
        attributes.take_on(wanted)


def test_a_hierarchy_that_is_not_mounted_is_refused() -> None:
    wanted = attributes.collect()
    wanted["cgroups"] = "12:no-such-controller:/x\n"
    with pytest.raises(ValueError, match="no mount"):
        attributes.take_on(wanted)


def test_a_memory_limit_below_what_the_process_uses_is_refused() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    wanted = attributes.collect()
    wanted["limits"]["RLIMIT_AS"] = [4096, 4096]  # 4 KiB: no Python process fits
    with pytest.raises(ValueError, match="RLIMIT_AS .* below the server's own"):
        attributes.take_on(wanted)
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # not set
