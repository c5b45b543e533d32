"""Which Ray the bridge joins: VIDBRIEF_RAY_ADDRESS, else Ray's own RAY_ADDRESS, else a private
local Ray, which alone gets Ray's Windows/OSX switch (never left in the environment, where
`ray start --address` would abort under it)."""

from __future__ import annotations

import os

import pytest
from ray._private import ray_constants

from raybridge.run import RAY_SWITCH_VARIABLE, private_ray_switch, ray_address


def test_vidbrief_ray_address_wins_then_rays_own(make_settings, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "head.example:6379")
    assert ray_address(make_settings()) == ("head.example:6379", "RAY_ADDRESS")
    chosen = make_settings(ray_address="other:6379")
    assert ray_address(chosen) == ("other:6379", "VIDBRIEF_RAY_ADDRESS")
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address(make_settings()) == (None, "RAY_ADDRESS")


@pytest.mark.parametrize("before", [None, "1"])
def test_the_switch_is_on_only_while_the_private_ray_starts(before, monkeypatch) -> None:
    if before is None:
        monkeypatch.delenv(RAY_SWITCH_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(RAY_SWITCH_VARIABLE, before)
    flag = ray_constants.ENABLE_RAY_CLUSTER
    with private_ray_switch():
        assert os.environ[RAY_SWITCH_VARIABLE] == "0"
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert os.environ.get(RAY_SWITCH_VARIABLE) == before
    assert flag is ray_constants.ENABLE_RAY_CLUSTER


def test_the_tests_do_not_export_the_switch() -> None:
    """tests/conftest.py keeps the tests' own Rays private without exporting the switch to the
    programs the tests start (`ray start --address` aborts under it)."""
    assert RAY_SWITCH_VARIABLE not in os.environ
