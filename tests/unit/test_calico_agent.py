"""felix-lite's loop: no failure in a sync ends the daemon (no etcd, no host changes)."""

from __future__ import annotations

import pytest

from chainlab.calico import agent
from chainlab.calico.apply import ApplyError
from tests.unit.test_calico_rules import LAB


class Stop(BaseException):
    """Ends `serve` from a test (an Exception would be caught by the loop)."""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """The agent with LAB as etcd's tree, `apply` and the watch recorded, sleeps counted."""
    calls: dict[str, list] = {"applied": [], "waited": [], "slept": []}
    monkeypatch.setattr(agent, "read_tree", lambda client: (dict(LAB), 7))
    monkeypatch.setattr(agent, "apply", lambda model, links: calls["applied"].append(model.host))
    monkeypatch.setattr(agent, "_wait_for_change", lambda client, index: calls["waited"].append(index))
    monkeypatch.setattr(agent.time, "sleep", lambda seconds: calls["slept"].append(seconds))
    return calls


def fail_once(monkeypatch: pytest.MonkeyPatch, name: str, error: Exception) -> None:
    """Make `agent.<name>` raise `error` on its first call only."""
    real = getattr(agent, name)
    failed: list[bool] = []

    def flaky(*args: object) -> object:
        if not failed:
            failed.append(True)
            raise error
        return real(*args)

    monkeypatch.setattr(agent, name, flaky)


@pytest.mark.parametrize("error", [ValueError("bad cidr"), KeyError("cidr"), ApplyError("iptables-restore: line 3")])
def test_failed_render_is_logged_and_the_next_iteration_applies(
        fake: dict[str, list], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        error: Exception) -> None:
    state = agent.AgentState()
    agent.iteration(None, "master", state)
    assert fake["applied"] == ["master"] and state.last is not None
    fail_once(monkeypatch, "dataplane", error)  # the sync fails before anything is applied
    agent.iteration(None, "master", state)
    assert state.last is None and fake["slept"] == [agent.RETRY_DELAY] and fake["waited"] == [7]
    assert "retrying" in caplog.text
    agent.iteration(None, "master", state)  # same tree, applied again: the failure may have left it half done
    assert fake["applied"] == ["master", "master"] and fake["waited"] == [7, 7]


def test_unchanged_tree_is_not_applied_again(fake: dict[str, list]) -> None:
    state = agent.AgentState()
    agent.iteration(None, "master", state)
    agent.iteration(None, "master", state)
    assert fake["applied"] == ["master"] and fake["waited"] == [7, 7] and fake["slept"] == []


def test_serve_keeps_running_after_an_unexpected_error(
        fake: dict[str, list], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fail_once(monkeypatch, "dataplane", RuntimeError("boom"))

    def wait(client: object, index: int) -> None:
        fake["waited"].append(index)
        if len(fake["waited"]) == 2:
            raise Stop

    monkeypatch.setattr(agent, "_wait_for_change", wait)
    monkeypatch.setattr(agent, "follow_links", lambda client, host, state: None)
    with pytest.raises(Stop):
        agent.serve(None, "master")
    assert fake["applied"] == ["master"] and fake["slept"] == [agent.RETRY_DELAY]
    assert "Traceback" in caplog.text and "RuntimeError: boom" in caplog.text


def test_link_thread_syncs_when_a_workload_interface_comes_and_retries_its_failed_sync(
        fake: dict[str, list], monkeypatch: pytest.MonkeyPatch) -> None:
    links = [frozenset({"cali0"})]
    monkeypatch.setattr(agent, "workload_links", lambda: links[0])
    state = agent.AgentState()
    agent.iteration(None, "master", state)  # applied with cali0, then the watch (recorded)
    looks = iter([None, "join", None, "join again", None])

    def tick(seconds: float) -> None:
        step = next(looks, "stop")
        if step == "join":
            links[0] = frozenset({"cali0", "cali1"})
        elif step == "join again":
            links[0] = frozenset({"cali0", "cali1", "cali2"})
            fail_once(monkeypatch, "dataplane", RuntimeError("boom"))  # this sync fails: retried a tick later
        elif step == "stop":
            raise Stop

    monkeypatch.setattr(agent.time, "sleep", tick)
    with pytest.raises(Stop):
        agent.follow_links(None, "master", state)
    assert fake["applied"] == ["master"] * 3 and fake["waited"] == [7] and state.last is not None
    assert state.last[1] == links[0]
