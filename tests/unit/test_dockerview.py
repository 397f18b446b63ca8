"""The one Docker probe of lab up: curl on dockerd's socket, else `docker inspect`; both parsed alike."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from chainlab.provision.dockerview import DockerView, inspect_argv

IMAGE = '{"Id":"sha256:1","RepoTags":["mybusybox:latest"]}'
CONTAINER = '{"Id":"c1","Name":"/web1","State":{"Running":true}}'
NETWORK = '{"Name":"net1","Driver":"calico","IPAM":{"Driver":"calico-ipam"}}'


def test_parse_reads_inspects_list_and_curls_objects_alike():
    listed = DockerView.parse(f"[{IMAGE},{CONTAINER},{NETWORK}]\n")
    one_by_one = DockerView.parse(f'{IMAGE}\n{{"message":"No such container: web2"}}\n{CONTAINER}\n{NETWORK}\n')
    assert listed == one_by_one
    assert sorted(listed.images) == ["mybusybox", "mybusybox:latest"]
    assert list(listed.containers) == ["web1"] and list(listed.networks) == ["net1"]


def test_parse_goes_on_after_damage_at_the_next_line():
    view = DockerView.parse(f"{IMAGE}\n{{\"Name\": tru")
    assert "mybusybox" in view.images and not view.containers
    # an old daemon's plain-text 404, a body cut short: the objects after them still count
    view = DockerView.parse(f"No such image: foo\n{{\"Id\": \"cut\n{CONTAINER}\n{NETWORK}\n")
    assert list(view.containers) == ["web1"] and list(view.networks) == ["net1"]
    assert DockerView.parse("") == DockerView() == DockerView.parse("Error: No such object: x\n")


@pytest.fixture
def host(tmp_path: Path):
    """A PATH with a `curl` and a `docker` that say how they were called, and a listening socket."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("curl", "docker"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*"\nexit "${{{tool.upper()}_EXIT:-0}}"\n')
        (bin_dir / tool).chmod(0o755)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "docker.sock"))
    yield tmp_path, bin_dir
    sock.close()


def _run(argv: list[str], env: dict[str, str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False).stdout


def test_curl_asks_each_object_by_its_kind(host):
    tmp, bin_dir = host
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp)}
    argv = inspect_argv(["mybusybox", "reg.example/a/b:1.2"], ["web1"], ["net1"], socket=str(tmp / "docker.sock"))
    assert _run(argv, env).split() == [
        "curl", "-sS", "-m", "10", "--path-as-is", "--unix-socket", str(tmp / "docker.sock"), "http://docker/images/mybusybox/json",
        "http://docker/images/reg.example/a/b:1.2/json", "http://docker/containers/web1/json",
        "http://docker/networks/net1"]


@pytest.mark.parametrize("why", ["DOCKER_HOST", "DOCKER_CONTEXT", "a context of the user's",
                                 "a context in DOCKER_CONFIG", "curl failed", "no socket", "no curl"])
def test_docker_inspect_answers_where_curl_might_ask_another_daemon_or_cannot(host, why):
    tmp, bin_dir = host
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp)}
    sock = str(tmp / "docker.sock")
    if why in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        env[why] = "elsewhere"
    elif why == "a context of the user's":
        (tmp / ".docker" / "contexts" / "meta").mkdir(parents=True)
    elif why == "a context in DOCKER_CONFIG":
        (tmp / "conf" / "contexts" / "meta").mkdir(parents=True)
        env["DOCKER_CONFIG"] = str(tmp / "conf")
    elif why == "curl failed":
        env["CURL_EXIT"] = "7"
    elif why == "no socket":
        sock = str(tmp / "missing.sock")
    else:  # a PATH of sh, timeout and docker only: the machine's curl must not be found either
        os.unlink(bin_dir / "curl")
        (bin_dir / "sh").symlink_to(shutil.which("sh"))
        (bin_dir / "timeout").symlink_to(shutil.which("timeout"))
        env["PATH"] = str(bin_dir)
    out = _run(inspect_argv(["mybusybox"], ["web1"], ["net1"], socket=sock), env)
    assert out.splitlines() == ["docker inspect mybusybox web1 net1"]  # a failed curl's output is dropped


def test_a_dockerd_that_does_not_answer_ends_the_look(host):
    """curl timed out (dockerd stopped): `docker inspect` would wait on it too, so the probe
    ends with curl's status, which the step reads as `dockerd did not answer`."""
    from chainlab.provision.dockerview import NOT_ANSWERED

    tmp, bin_dir = host
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp), "CURL_EXIT": "28"}
    proc = subprocess.run(inspect_argv(["mybusybox"], socket=str(tmp / "docker.sock")), capture_output=True,
                          text=True, env=env, check=False)
    assert proc.returncode in NOT_ANSWERED and "docker inspect" not in proc.stdout
