"""`chainlab` end to end: bad inputs and closed pipes give clean exits, never tracebacks."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from chainlab import cli

from chainlab.errors import ChainlabError
from chainlab.render import diagram

ROOT = Path(__file__).resolve().parents[2]
CHAINLAB = Path(sys.executable).parent / "chainlab"
SCENARIO = ROOT / "scenarios" / "01-host-to-container.yaml"
LOG = ROOT / "tests" / "fixtures" / "seed-logs" / "scenario1-master.log"

pytestmark = pytest.mark.skipif(not CHAINLAB.exists(), reason="console script not installed")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHAINLAB_INVENTORY"}
    env.update({"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}, **extra)
    return env


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHAINLAB), *args], cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=60
    )


def assert_clean_error(result: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


def test_analyze_gz_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_text("hello\n")
    assert_clean_error(run("analyze", str(path)), f"{path}: log: not a gzip file")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_analyze_truncated_gzip_is_an_error_before_any_output(tmp_path: Path, fmt: str) -> None:
    # Long enough that streamed JSON would have written packets before the cut.
    data = gzip.compress(LOG.read_bytes() * 200)
    path = tmp_path / "master.log.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    result = run("analyze", "--format", fmt, f"master={path}")
    assert_clean_error(result, f"{path}: log: gzip data ends early")
    assert "Aborted" not in result.stderr
    assert result.stdout == ""


def test_analyze_gzip_with_bytes_after_it(tmp_path: Path) -> None:
    path = tmp_path / "x.log.gz"
    path.write_bytes(gzip.compress(LOG.read_bytes()) + b"junk after the member\n")
    assert_clean_error(run("analyze", str(path)), f"{path}: log: bytes after the gzip data are not gzip")


@pytest.mark.parametrize("name,encode,said", [
    ("gzip-named-log.log", gzip.compress, "is gzip-compressed but not named .gz"),
    ("windows.log", lambda data: data.decode().encode("utf-16"), "is UTF-16 text: `iconv -f UTF-16"),
])
def test_analyze_says_why_a_log_read_as_noise(tmp_path: Path, name: str, encode: Callable[[bytes], bytes],
                                              said: str) -> None:
    path = tmp_path / name
    path.write_bytes(encode(LOG.read_bytes()))
    result = run("analyze", str(path))
    assert result.returncode == 0 and f"note: {path} {said}" in result.stderr, result.stderr


@pytest.mark.parametrize("arg", ["-", "master=-"])
def test_analyze_reads_standard_input(arg: str, tmp_path: Path) -> None:
    """`journalctl -k | chainlab analyze -`: the same analysis as of the file (gzip too), and
    the spooled copy is gone afterwards."""
    from_file = run("analyze", "--format", "json", f"master={LOG}" if arg != "-" else str(LOG))
    for data in (LOG.read_bytes(), gzip.compress(LOG.read_bytes())):
        piped = subprocess.run([str(CHAINLAB), "analyze", "--format", "json", arg], input=data, cwd=ROOT,
                               env=_env(TMPDIR=str(tmp_path)), capture_output=True, timeout=60)
        assert piped.returncode == 0, piped.stderr
        assert json.loads(piped.stdout)["packets"] == json.loads(from_file.stdout)["packets"]
    assert list(tmp_path.iterdir()) == []
    twice = subprocess.run([str(CHAINLAB), "analyze", "-", "-"], input="", cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=60)
    assert_clean_error(twice, "standard input can be read once")


def test_analyze_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "rules.fifo"
    os.mkfifo(fifo)
    result = run("analyze", "--rules", f"master={fifo}", str(LOG))
    assert_clean_error(result, f"{fifo}: --rules: not a regular file")


@pytest.mark.parametrize("node", ["node_a", "Web1", "node-a.example.com", "09-web", "x" * 40])
def test_analyze_node_is_any_name_but_a_path(node: str, tmp_path: Path) -> None:
    """NODE=LOGFILE names the node as the logs themselves may (not only a lab's host names)."""
    import json

    result = run("analyze", "--format", "json", f"{node}={LOG}")
    assert result.returncode == 0, result.stderr
    assert {p["node"] for p in json.loads(result.stdout)["packets"]} == {node}


def test_analyze_log_whose_path_holds_an_equals_sign(tmp_path: Path) -> None:
    path = tmp_path / "a=b.log"
    path.write_bytes(LOG.read_bytes())
    assert run("analyze", str(path)).returncode == 0
    assert_clean_error(run("analyze", "master="), "master= names no file")


RULES = ROOT / "tests" / "fixtures" / "lab" / "scenario4-master.rules"


@pytest.mark.parametrize("text", ["", "garbage line\n", "\x00\xff\xfe binary\n"], ids=["empty", "junk", "binary"])
def test_analyze_rules_without_a_table_is_an_error(tmp_path: Path, text: str) -> None:
    """Taken as a snapshot, a file with no table would say the node has no chain at all and
    turn verdicts into unknowns without a word."""
    path = tmp_path / "x.rules"
    path.write_text(text, errors="surrogateescape")
    assert_clean_error(run("analyze", "--rules", f"master={path}", str(LOG)), f"{path}: --rules: no iptables-save table")


def test_analyze_rules_twice_for_a_node_and_for_no_node_of_the_logs() -> None:
    assert_clean_error(run("analyze", "--rules", f"master={RULES}", "--rules", f"master={RULES}", f"master={LOG}"),
                       "a second snapshot of node master")
    result = run("analyze", "--rules", f"nosuch={RULES}", f"master={LOG}")
    assert result.returncode == 0 and "note: --rules nosuch=...: no trace line is of node nosuch" in result.stderr


def test_svg_without_graphviz_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ChainlabError, match=r"graphviz's `dot` is not installed: apt-get install graphviz"):
        diagram.to_svg(diagram.DiagramModel(nodes=["master"]))


def test_analyze_svg_without_graphviz() -> None:
    result = run("analyze", "--format", "svg", f"master={LOG}", PATH="/nonexistent")
    assert_clean_error(result, "graphviz's `dot` is not installed", code=1)
    assert result.stdout == ""


def _run_with_stdout_closed(*args: str, tmp_path: Path) -> tuple[int, str]:
    """Exit code and stderr of chainlab whose stdout's reader is gone before it writes."""
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [str(CHAINLAB), *args], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=err
        )
        assert process.stdout is not None
        process.stdout.close()
        code = process.wait(timeout=60)
    return code, stderr.read_text()


@pytest.mark.parametrize("args", [
    ("analyze", "--expect", str(SCENARIO), f"master={LOG}"),
    ("analyze", "--format", "json", f"master={LOG}"),
    ("--help",),
], ids=["expect", "json", "help"])
def test_closed_stdout_exits_141_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    # Not 1: for `analyze --expect` that would mean "the paths differ".
    assert _run_with_stdout_closed(*args, tmp_path=tmp_path) == (cli.EXIT_STDOUT_CLOSED, "")
    assert cli.EXIT_STDOUT_CLOSED == 141


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("fmt", ["json", "text", "summary"])
def test_a_stdout_that_cannot_be_written_is_one_clean_error(engine: str, fmt: str) -> None:
    """`chainlab analyze ... > /dev/full` (a full disk): one line on stderr, exit 1, no traceback."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([str(CHAINLAB), "analyze", "--format", fmt, f"master={LOG}"], cwd=ROOT,
                              env={**_env(), "CHAINLAB_ENGINE": engine}, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: cannot write the output: No space left on device"


def test_expect_exit_codes_with_an_open_stdout() -> None:
    assert run("analyze", "--expect", str(SCENARIO), f"master={LOG}").returncode == 0
    other = run("analyze", "--expect", str(ROOT / "scenarios" / "02-container-to-own-host.yaml"), f"master={LOG}")
    assert (other.returncode, other.stderr) == (1, "")


def _exit_code_of_main(monkeypatch: pytest.MonkeyPatch, behaviour: Callable[..., object]) -> object:
    monkeypatch.setattr(cli.group, "main", behaviour)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # main() wraps it; undone after the test
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code


def test_main_exits_with_the_commands_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # group.main(standalone_mode=False) returns what ctx.exit(N) asked for.
    assert _exit_code_of_main(monkeypatch, lambda **_: 3) == 3
    assert _exit_code_of_main(monkeypatch, lambda **_: None) == 0


def test_click_exception_keeps_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(**_: object) -> None:
        raise click.ClickException("cannot do that")

    assert _exit_code_of_main(monkeypatch, fail) == 1


def test_usage_error_exits_2() -> None:
    result = run("analyze", "--bogus")
    assert result.returncode == 2 and "No such option" in result.stderr


def test_a_lab_that_is_not_provisioned_names_the_default_inventory(tmp_path: Path):
    """No -i and no $CHAINLAB_INVENTORY: the error says which inventory that was and how to
    reach the local lab (a newcomer after `make demo` types the README's `chainlab probe`)."""
    (tmp_path / "inventory.yaml").write_text((ROOT / "inventory.yaml").read_text())
    env = _env(XDG_STATE_HOME=str(tmp_path / "state"))
    defaulted = subprocess.run([str(CHAINLAB), "probe", "slave1", "web1"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)
    assert defaulted.returncode == 1 and "Traceback" not in defaulted.stderr
    assert "lab reference is not provisioned" in defaulted.stderr
    assert "no -i given" in defaulted.stderr and "-i lab/local.yaml" in defaulted.stderr
    explicit = subprocess.run([str(CHAINLAB), "-i", "inventory.yaml", "probe", "slave1", "web1"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
    assert explicit.returncode == 1 and "lab reference is not provisioned" in explicit.stderr
    assert "no -i given" not in explicit.stderr


def test_an_error_prints_control_characters_escaped(tmp_path: Path) -> None:
    """Whatever an error quotes (a file name, a remote answer) drives no terminal."""
    name = tmp_path / "x\x1b]0;title\x07.log"
    result = run("analyze", str(name))
    assert_clean_error(result, "x\\x1b]0;title\\x07.log: log: no such file")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_chainlab_ssh_own_failures_exit_255_as_openssh(tmp_path: Path) -> None:
    """An unknown host, a bad inventory, a lab address not routed through its lab's link
    (here a lab on an unused lan, never up): said, and exit 255, which no remote command's
    status is taken for (OpenSSH's own failures exit 255 too)."""
    assert_clean_error(run("-i", "lab/local.yaml", "ssh", "nosuch", "--", "true"), "nosuch: is not a host", 255)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: x\nhosts: [\n")
    assert_clean_error(run("-i", str(bad), "ssh", "master"), str(bad), 255)
    text = (ROOT / "lab" / "local.yaml").read_text().replace("10.231.91.", "10.231.66.")  # no test brings it up
    elsewhere = tmp_path / "inventory.yaml"
    elsewhere.write_text(text.replace("state_dir: /var/lib/chainlab/local", f"state_dir: {tmp_path / 'state'}"))
    assert_clean_error(run("-i", str(elsewhere), "ssh", "master", "--", "true"), "refusing to connect", 255)
