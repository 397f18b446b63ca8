"""`chainlab inventory check` end to end: exit codes, clean errors, inventory selection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAINLAB = Path(sys.executable).parent / "chainlab"
REFERENCE = ROOT / "inventory.yaml"
LOCAL = ROOT / "lab" / "local.yaml"

pytestmark = pytest.mark.skipif(not CHAINLAB.exists(), reason="console script not installed")


def run(*args: str, cwd: Path | None = None, env_inventory: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CHAINLAB_INVENTORY"}
    env.update({"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"})
    if env_inventory is not None:
        env["CHAINLAB_INVENTORY"] = env_inventory
    return subprocess.run(
        [str(CHAINLAB), *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def assert_clean_failure(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.strip()


@pytest.mark.parametrize("path", [REFERENCE, LOCAL], ids=["reference", "local"])
def test_check_valid_inventories(path: Path) -> None:
    result = run("inventory", "check", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("master", "slave1", "slave2", "web1", "web3"):
        assert name in out
    assert "etcd on master:2379" in out and "net1" in out and "mybusybox" in out
    assert "valid" in out


def test_table_does_not_cut_addresses_at_80_columns() -> None:
    out = run("inventory", "check", str(REFERENCE)).stdout
    for address in ("172.16.91.195", "172.16.91.196", "172.16.91.197"):
        assert address in out


def test_typo_reports_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    text = REFERENCE.read_text().replace("  port: 2379\n", "  prot: 2379\n")
    bad.write_text(text)
    line = text.splitlines().index("  prot: 2379") + 1
    result = run("inventory", "check", str(bad))
    assert_clean_failure(result)
    assert f"{bad}:{line}: etcd.prot:" in result.stderr
    assert "unknown key" in result.stderr and "`port`" in result.stderr


BAD_FILES = {
    "shell-host": 'hosts:\n  "master;rm -rf /":\n    address: 10.0.0.1\n',
    "shell-container": 'hosts:\n  master: {address: 10.0.0.1}\ncontainers:\n  "$(reboot) x": {host: master}\n',
    "wrong-type": "hosts:\n  master: {address: 10.0.0.1, roles: master}\nssh: {port: abc}\n",
    "aliases": 'a: &a ["lol","lol","lol"]\nb: &b [*a,*a,*a]\nc: [*b,*b,*b]\n',
    "syntax": "hosts:\n  master:\n    address: [10.0.0.1\n",
    "empty": "",
    "etcd-host": "hosts:\n  master: {address: 10.0.0.1}\netcd: {host: slave1}\n",
    "container-host": "hosts:\n  master: {address: 10.0.0.1}\ncontainers:\n  web3: {host: slave1}\n",
    "local-without-local": "provider: local\nhosts:\n  master: {address: 10.0.0.1}\n",
    "bad-timestamp": "hosts:\n  master: {address: 10.0.0.1}\nlab: 2020-99-99\n",
    "deep": "lab: " + "[" * 3000 + "]" * 3000 + "\n",
    "markup": "hosts:\n  master: {address: 10.0.0.1}\n'[red]x[/red]': 1\n",
    "a-scenario": (ROOT / "scenarios" / "01-host-to-container.yaml").read_text(),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_exit_2_without_traceback(tmp_path: Path, name: str) -> None:
    bad = tmp_path / f"{name}.yaml"
    bad.write_text(BAD_FILES[name])
    result = run("inventory", "check", str(bad))
    assert_clean_failure(result)
    assert str(bad) in result.stderr


def test_markup_in_keys_is_printed_literally(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text(BAD_FILES["markup"])
    stderr = run("inventory", "check", str(bad)).stderr
    assert f"{bad}:3: [red]x[/red]: unknown key" in stderr


def test_error_messages_carry_lines(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text(BAD_FILES["syntax"])
    assert f"{bad}:4:" in run("inventory", "check", str(bad)).stderr
    bad.write_text(BAD_FILES["shell-host"])
    stderr = run("inventory", "check", str(bad)).stderr
    assert f"{bad}:2:" in stderr and "lowercase letters" in stderr


def test_missing_file_is_clean(tmp_path: Path) -> None:
    result = run("inventory", "check", str(tmp_path / "nope.yaml"))
    assert_clean_failure(result)
    assert "nope.yaml" in result.stderr


def test_missing_default_inventory_is_clean(tmp_path: Path) -> None:
    result = run("inventory", "check", cwd=tmp_path)
    assert_clean_failure(result)
    assert "inventory.yaml" in result.stderr


def test_directory_is_clean(tmp_path: Path) -> None:
    assert_clean_failure(run("inventory", "check", str(tmp_path)))
    assert_clean_failure(run("-i", str(tmp_path), "inventory", "check"))


def test_unknown_option_is_a_usage_error() -> None:
    assert_clean_failure(run("inventory", "check", "--bogus"))


# --- which inventory: -i, else $CHAINLAB_INVENTORY, else ./inventory.yaml ------------------

@pytest.fixture
def three_inventories(tmp_path: Path) -> dict[str, Path]:
    """Three valid inventories told apart by their `lab:` name, one as ./inventory.yaml."""
    paths = {}
    for lab, rel in (("fromcwd", "inventory.yaml"), ("fromenv", "env.yaml"), ("fromopt", "opt.yaml")):
        path = tmp_path / rel
        path.write_text(REFERENCE.read_text().replace("lab: reference", f"lab: {lab}"))
        paths[lab] = path
    return paths


def lab_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    for lab in ("fromcwd", "fromenv", "fromopt"):
        if f"lab {lab}" in result.stdout:
            return lab
    raise AssertionError(result.stdout)


def test_default_is_inventory_yaml_in_cwd(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    assert lab_of(run("inventory", "check", cwd=tmp_path)) == "fromcwd"


def test_env_beats_cwd(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    result = run("inventory", "check", cwd=tmp_path, env_inventory=str(three_inventories["fromenv"]))
    assert lab_of(result) == "fromenv"


def test_option_beats_env(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    for flag in ("-i", "--inventory"):
        result = run(flag, str(three_inventories["fromopt"]), "inventory", "check",
                     cwd=tmp_path, env_inventory=str(three_inventories["fromenv"]))
        assert lab_of(result) == "fromopt"


def test_relative_paths_are_relative_to_cwd(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    assert lab_of(run("-i", "opt.yaml", "inventory", "check", cwd=tmp_path)) == "fromopt"
    assert lab_of(run("inventory", "check", cwd=tmp_path, env_inventory="env.yaml")) == "fromenv"


def test_file_argument_beats_option(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    result = run("-i", "opt.yaml", "inventory", "check", "env.yaml", cwd=tmp_path)
    assert lab_of(result) == "fromenv"


def test_empty_env_falls_back_to_cwd(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    assert lab_of(run("inventory", "check", cwd=tmp_path, env_inventory="")) == "fromcwd"


def test_bad_env_inventory_is_clean(tmp_path: Path) -> None:
    result = run("inventory", "check", cwd=tmp_path, env_inventory=str(tmp_path / "gone.yaml"))
    assert_clean_failure(result)
    assert "gone.yaml" in result.stderr


def test_help_and_version() -> None:
    assert run("--help").returncode == 0
    assert "--inventory" in run("--help").stdout
    assert run("--version").returncode == 0
    assert run("inventory", "check", "--help").returncode == 0


def test_makefile_is_not_needed_for_a_copy(tmp_path: Path) -> None:
    # the shipped inventory validates from anywhere, not only from the repository
    shutil.copy(LOCAL, tmp_path / "inventory.yaml")
    result = run("inventory", "check", cwd=tmp_path)
    assert result.returncode == 0 and "lab local (local)" in result.stdout


def test_duplicate_key_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "dup.yaml"
    bad.write_text(REFERENCE.read_text().replace("hosts:\n", "hosts:\n  master:\n    address: 10.9.9.9\n", 1))
    lines = bad.read_text().splitlines()
    line = lines.index("  master:", lines.index("  master:") + 1) + 1  # the second one
    result = run("inventory", "check", str(bad))
    assert_clean_failure(result)
    assert f"{bad}:{line}: invalid YAML: duplicate key `master`" in result.stderr


def test_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("hosts:\n  master: {address: 10.0.0.1}\n  slave1: {address: 10.0.0.2}\n")
    assert run("inventory", "check", str(ok)).returncode == 0


def test_an_empty_inventory_option_is_refused_not_the_default(tmp_path: Path, three_inventories: dict[str, Path]) -> None:
    """`-i ''` (an unset shell variable) fell back to ./inventory.yaml: real VMs in this repo."""
    result = run("-i", "", "inventory", "check", cwd=tmp_path)
    assert_clean_failure(result)
    assert "-i/--inventory: an empty path" in result.stderr


def test_a_missing_default_inventory_says_how_to_name_one(tmp_path: Path) -> None:
    result = run("inventory", "check", cwd=tmp_path)
    assert "no -i given and CHAINLAB_INVENTORY unset" in result.stderr.replace("\n", " ")
