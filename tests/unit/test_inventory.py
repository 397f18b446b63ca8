"""Inventory loading: the reference facts, and every kind of bad input as a clean InputError."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainlab.errors import InputError
from chainlab.inventory import Inventory, load_inventory, resolve_inventory_path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "inventory.yaml"
LOCAL = ROOT / "lab" / "local.yaml"

MINIMAL = "hosts:\n  master:\n    address: 10.0.0.1\n"


def write(tmp_path: Path, text: str, name: str = "inv.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list:
    with pytest.raises(InputError) as info:
        load_inventory(path)
    assert info.value.problems
    return info.value.problems


def messages(path: Path) -> str:
    return str(InputError(problems(path)))


# --- the two shipped inventories -------------------------------------------------------

@pytest.mark.parametrize("path", [REFERENCE, LOCAL], ids=["reference", "local"])
def test_shipped_inventories_share_the_lab_layout(path: Path) -> None:
    inv = load_inventory(path)
    assert list(inv.hosts) == ["master", "slave1", "slave2"]
    assert "etcd" in inv.hosts["master"].roles and "master" in inv.hosts["master"].roles
    assert inv.etcd is not None and inv.etcd.host == "master" and inv.etcd.port == 2379
    assert {n: c.host for n, c in inv.containers.items()} == {
        "web1": "master", "web2": "master", "web3": "slave1"
    }
    assert inv.calico.network == "net1"
    assert inv.image.name == "mybusybox"
    for name in inv.containers:
        assert inv.container_network(name) == "net1"
        assert inv.container_image(name) == "mybusybox"


def test_reference_inventory_facts() -> None:
    inv = load_inventory(REFERENCE)
    assert inv.provider == "ssh"
    assert {n: h.address for n, h in inv.hosts.items()} == {
        "master": IPv4Address("172.16.91.195"),
        "slave1": IPv4Address("172.16.91.196"),
        "slave2": IPv4Address("172.16.91.197"),
    }
    assert inv.ssh.user == "root" and inv.ssh.key
    assert inv.local is None


def test_local_inventory_is_provider_local() -> None:
    inv = load_inventory(LOCAL)
    assert inv.provider == "local" and inv.local is not None
    for host in inv.hosts.values():
        assert host.address in inv.local.lan.network and host.address != inv.local.lan.ip


def test_minimal_inventory_gets_defaults(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, MINIMAL))
    assert inv.provider == "ssh" and inv.ssh.port == 22 and inv.calico.network == "net1"


# --- path resolution ---------------------------------------------------------------------

def test_resolve_inventory_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINLAB_INVENTORY", raising=False)
    assert resolve_inventory_path(None) == Path("inventory.yaml")
    monkeypatch.setenv("CHAINLAB_INVENTORY", "/env/inv.yaml")
    assert resolve_inventory_path(None) == Path("/env/inv.yaml")
    assert resolve_inventory_path("opt.yaml") == Path("opt.yaml")
    monkeypatch.setenv("CHAINLAB_INVENTORY", "")
    assert resolve_inventory_path(None) == Path("inventory.yaml")


# --- unknown keys, wrong types -----------------------------------------------------------

def test_typo_names_file_line_and_key_path(tmp_path: Path) -> None:
    text = REFERENCE.read_text().replace("    os: centos7\n", "    oss: centos7\n", 1)
    path = write(tmp_path, text)
    line = text.splitlines().index("    oss: centos7") + 1
    [problem] = problems(path)
    assert problem.file == str(path)
    assert problem.line == line
    assert problem.path == "hosts.master.oss"
    assert "unknown key" in problem.message and "`os`" in problem.message
    assert f"{path}:{line}: hosts.master.oss:" in str(problem)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "contianers: {}\n"))
    assert problem.path == "contianers" and problem.line == 4
    assert "did you mean `containers`" in problem.message
    assert "Allowed here:" in problem.message


def test_unknown_key_deep_in_container(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "containers:\n  web1:\n    host: master\n    imgae: x\n"))
    assert problem.path == "containers.web1.imgae" and problem.line == 7
    assert "`image`" in problem.message


@pytest.mark.parametrize(
    "extra, key_path, line",
    [
        ("ssh:\n  port: twenty-two\n", "ssh.port", 5),
        ("ssh:\n  port: 70000\n", "ssh.port", 5),
        ("calico:\n  pool: not-a-network\n", "calico.pool", 5),
        ("calico:\n  nat_outgoing: maybe\n", "calico.nat_outgoing", 5),
        ("provider: telnet\n", "provider", 4),
        ("containers:\n  web1: {host: master, publish: {8080: http}}\n", "containers.web1.publish[8080]", 5),
    ],
)
def test_wrong_type_or_value(tmp_path: Path, extra: str, key_path: str, line: int) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + extra))
    assert problem.path == key_path
    assert problem.line == line


def test_wrong_type_says_what_was_given(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "    roles: master\n"))
    assert problem.path == "hosts.master.roles" and problem.line == 4
    assert "list" in problem.message and "'master'" in problem.message


def test_bad_address(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "hosts:\n  master:\n    address: 300.1.1.1\n"))
    assert problem.path == "hosts.master.address" and problem.line == 3


def test_every_problem_is_reported(tmp_path: Path) -> None:
    found = problems(write(tmp_path, MINIMAL + "ssh: {port: x, user: Root}\nlabb: x\n"))
    assert {p.path for p in found} == {"ssh.port", "ssh.user", "labb"}


@pytest.mark.parametrize("top", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, top: str) -> None:
    [problem] = problems(write(tmp_path, top))
    assert "expected a mapping" in problem.message
    assert "instance of" not in problem.message


def test_missing_hosts(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "lab: x\n"))
    assert problem.path == "hosts" and "missing" in problem.message


def test_empty_hosts(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "hosts: {}\n"))
    assert problem.path == "hosts" and "at least one host" in problem.message


# --- names that reach shells -------------------------------------------------------------

@pytest.mark.parametrize(
    "text, key_path",
    [
        ('hosts:\n  "master;rm -rf /":\n    address: 10.0.0.1\n', "hosts.master;rm -rf /"),
        ('hosts:\n  Master:\n    address: 10.0.0.1\n', "hosts.Master"),
        ('hosts:\n  master-:\n    address: 10.0.0.1\n', "hosts.master-"),
        (MINIMAL + 'containers:\n  "$(reboot)": {host: master}\n', "containers.$(reboot)"),
        (MINIMAL + 'containers:\n  "web 1": {host: master}\n', "containers.web 1"),
        (MINIMAL + 'containers:\n  "`id`": {host: master}\n', "containers.`id`"),
        (MINIMAL + 'containers:\n  web1: {host: master, network: "net1; reboot"}\n', "containers.web1.network"),
        (MINIMAL + 'calico:\n  network: "$(id)"\n', "calico.network"),
        (MINIMAL + 'image:\n  name: "busybox && rm -rf /"\n', "image.name"),
        (MINIMAL + 'ssh:\n  user: "root;id"\n', "ssh.user"),
        (MINIMAL + 'ssh:\n  key: "~/.ssh/id rsa"\n', "ssh.key"),
        (MINIMAL + 'etcd:\n  host: "master|id"\n', "etcd.host"),
    ],
)
def test_unsafe_names_are_rejected(tmp_path: Path, text: str, key_path: str) -> None:
    found = problems(write(tmp_path, text))
    assert key_path in [p.path for p in found]
    problem = next(p for p in found if p.path == key_path)
    assert problem.line is not None
    assert "is not valid; expected" in problem.message
    assert "^" not in problem.message and "{0," not in problem.message  # words, not a regex


def test_host_name_message_says_what_is_allowed(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, 'hosts:\n  "master;rm -rf /":\n    address: 10.0.0.1\n'))
    assert problem.line == 2
    assert "lowercase letters, digits and '-'" in problem.message


# --- cross-checks -----------------------------------------------------------------------

def test_etcd_host_must_be_a_host(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "etcd:\n  host: slave9\n"))
    assert problem.path == "etcd.host" and problem.line == 5
    assert "'slave9'" in problem.message and "master" in problem.message
    assert "Value error" not in problem.message


def test_container_host_must_be_a_host(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "containers:\n  web1: {host: master}\n  web3:\n    host: slave1\n"))
    assert problem.path == "containers.web3.host" and problem.line == 7
    assert "'slave1'" in problem.message


def test_duplicate_addresses(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "  slave1:\n    address: 10.0.0.1\n"))
    assert problem.path == "hosts.slave1.address" and problem.line == 5
    assert "master" in problem.message


def test_provider_local_needs_local_section(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "provider: local\n" + MINIMAL))
    assert problem.path == "provider" and problem.line == 1
    assert "`local:`" in problem.message


def test_local_section_only_with_provider_local(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "local:\n  lan: 10.0.0.254/24\n"))
    assert problem.path == "local" and problem.line == 4


def test_local_hosts_must_be_inside_lan(tmp_path: Path) -> None:
    text = "provider: local\nlocal:\n  lan: 10.9.9.1/24\n" + MINIMAL
    [problem] = problems(write(tmp_path, text))
    assert problem.path == "hosts.master.address" and problem.line == 6


def test_local_host_must_not_be_the_machine_end(tmp_path: Path) -> None:
    text = "provider: local\nlocal:\n  lan: 10.0.0.1/24\n" + MINIMAL
    assert problems(write(tmp_path, text))[0].path == "hosts.master.address"


@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1", "240.0.0.1"])
def test_a_host_address_is_one_a_host_is_reached_at(tmp_path: Path, address: str) -> None:
    """These would name this machine or no one: lab up would provision the machine itself."""
    [problem] = problems(write(tmp_path, f"hosts:\n  master:\n    address: {address}\n"))
    assert problem.path == "hosts.master.address" and "a host's address is one it is reached at" in problem.message


@pytest.mark.parametrize("text,key_path,said", [
    ("etcd:\n  host: master\n  port: true\n", "etcd.port", "integer"),
    ("ssh:\n  port: 22.0\n", "ssh.port", "integer"),
    ("containers:\n  master: {host: master}\n", "containers.master", "also a host"),
    ("containers:\n  web1: {host: master, publish: {8080: 80}}\n", "containers.web1.publish", "calico.driver bridge"),
    ("calico: {driver: bridge}\ncontainers:\n  web1: {host: master, publish: {99999: 80}}\n", "containers.web1.publish",
     "65535"),
    ("calico: {driver: bridge}\ncontainers:\n  web1: {host: master, publish: {8080: 80}}\n"
     "  web2: {host: master, publish: {8080: 80}}\n", "containers.web2.publish", "already published by web1"),
    ("calico: {pool: 0.0.0.0/0}\n", "calico.pool", "no pool"),
    ("calico: {pool: 10.0.0.0/8}\n", "calico.pool", "holds master's address"),
    ("containers:\n  web1: {host: master}\n  web2: {host: master}\n  web3: {host: master}\ncalico: {pool: 172.20.0.0/31}\n",
     "calico.pool", "no pool"),
])
def test_values_an_inventory_cannot_hold(tmp_path: Path, text: str, key_path: str, said: str) -> None:
    found = problems(write(tmp_path, MINIMAL + text))
    assert any(p.path.startswith(key_path) and said in p.message for p in found), found


@pytest.mark.parametrize("log", ["/etc/passwd", "/", "/var/log/", "/usr/lib/x.log", "/run/x.log"])
def test_a_trace_log_is_a_file_outside_system_directories(tmp_path: Path, log: str) -> None:
    found = problems(write(tmp_path, MINIMAL + f"    trace_log: {log}\n"))
    assert any(p.path == "hosts.master.trace_log" for p in found), found


@pytest.mark.parametrize("lan,address,said", [
    ("10.9.9.0/24", "10.9.9.5", "local.lan"), ("10.9.9.1/24", "10.9.9.0", "hosts.master.address"),
    ("10.9.9.1/24", "10.9.9.255", "hosts.master.address"), ("10.9.9.1/0", "10.9.9.5", "local.lan"),
])
def test_a_local_lan_and_its_hosts_are_usable_addresses(tmp_path: Path, lan: str, address: str, said: str) -> None:
    text = f"provider: local\nlocal:\n  lan: {lan}\nhosts:\n  master:\n    address: {address}\n"
    assert problems(write(tmp_path, text))[0].path == said


def test_a_local_pool_does_not_overlap_the_lan(tmp_path: Path) -> None:
    text = "provider: local\nlocal:\n  lan: 172.20.0.1/24\nhosts:\n  master:\n    address: 172.20.0.5\n"
    assert any(p.path == "calico.pool" for p in problems(write(tmp_path, text + "calico: {pool: 172.20.0.0/16}\n")))


# --- YAML level ---------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    start = time.monotonic()
    [problem] = problems(write(tmp_path, BILLION_LAUGHS))
    assert time.monotonic() - start < 1.0
    assert "anchors are not allowed" in problem.message and problem.line == 1


def test_alias_without_anchor_reference_is_refused(tmp_path: Path) -> None:
    text = "hosts:\n  master: &m\n    address: 10.0.0.1\n  slave1: *m\n"
    [problem] = problems(write(tmp_path, text))
    assert "not allowed" in problem.message and problem.line == 2


def test_merge_key_with_alias_is_refused(tmp_path: Path) -> None:
    text = "base: &b {address: 10.0.0.1}\nhosts:\n  master:\n    <<: *b\n"
    assert "not allowed" in problems(write(tmp_path, text))[0].message


def test_invalid_yaml_syntax_gives_line(tmp_path: Path) -> None:
    text = MINIMAL + "    roles: [master\n  slave1:\n    address: 10.0.0.2\n"
    [problem] = problems(write(tmp_path, text))
    assert problem.message.startswith("invalid YAML")
    assert problem.line is not None and problem.line >= 4


def test_bad_indentation_gives_line(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "hosts:\n  master:\n    address: 10.0.0.1\n   roles: []\n"))
    assert problem.message.startswith("invalid YAML") and problem.line == 4


def test_missing_file(tmp_path: Path) -> None:
    [problem] = problems(tmp_path / "nope.yaml")
    assert "cannot read" in problem.message and "nope.yaml" in problem.file


def test_directory_instead_of_file(tmp_path: Path) -> None:
    [problem] = problems(tmp_path)
    assert "cannot read" in problem.message


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    [problem] = problems(write(tmp_path, text))
    assert "empty" in problem.message or "mapping" in problem.message


def test_two_documents(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, MINIMAL + "---\nlab: x\n"))
    assert "single document" in problem.message and problem.line == 4


def test_python_tags_are_refused(tmp_path: Path) -> None:
    text = MINIMAL + "lab: !!python/object/apply:os.system ['true']\n"
    assert problems(write(tmp_path, text))[0].message.startswith("invalid YAML")


@pytest.mark.parametrize(
    "value",
    ["2020-99-99", "!!int 0x", "!!int ''", "!!float ''", "!!bool ''", "!!float abc", "!!timestamp 2020-13-01", "!!binary '@@@'"],
)
def test_bad_scalars_do_not_escape_as_value_errors(tmp_path: Path, value: str) -> None:
    # SafeLoader raises plain ValueError for some of these; the loader must wrap them.
    found = problems(write(tmp_path, MINIMAL + f"lab: {value}\n"))
    assert found[0].line == 4


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "lab: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert "nested" in problem.message


def test_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(MINIMAL.encode() + b"lab: a\x00b\n")
    [problem] = problems(path)
    assert problem.line == 4 and "#x0000" in problem.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"\xff\xfe\x00h\x00o")
    problems(path)


def test_oversized_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "# " + "x" * 1_000_100 + "\n")
    assert "larger than" in problems(path)[0].message


def test_unhashable_key(tmp_path: Path) -> None:
    problems(write(tmp_path, "? [a, b]\n: 1\n"))


# --- fuzz: only InputError ever comes out --------------------------------------------------

def _load_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        result = load_inventory(path)
    except InputError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)
    else:
        assert isinstance(result, Inventory)


yamlish = st.lists(
    st.sampled_from(
        ["hosts:", "  master:", "    address: 10.0.0.1", "    roles: [master]", "ssh:", "  port: 22",
         "etcd: {host: master}", "containers:", "  web1: {host: master}", "- ", "&a ", "*a", "<<: ",
         "!!int ", "!!float ", "!!timestamp ", "2020-99-99", "[", "]", "{", "}", ":", "? ", "'", '"',
         "#", "---", "...", "|", ">", "\t", "  ", "\n", "provider: local", "local: {lan: 10.0.0.254/24}",
         "null", "~", "yes", "0x", "1e999", "!!binary ", "%YAML 1.1", "\\u0000", "\x00", "\ufeff"]
    )
    | st.text(max_size=8),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=yamlish)
def test_fuzz_yamlish_text(tmp_path: Path, text: str) -> None:
    _load_text(tmp_path, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_fuzz_arbitrary_text(tmp_path: Path, text: str) -> None:
    _load_text(tmp_path, text)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
keys = st.sampled_from(
    ["hosts", "master", "address", "roles", "ssh", "port", "user", "key", "etcd", "host", "containers",
     "web1", "publish", "calico", "network", "pool", "image", "name", "provider", "local", "lan", "lab",
     "os", "iptables", "trace_backend"]
) | st.text(max_size=10)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys | st.integers(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(keys, values, max_size=8))
def test_fuzz_random_mappings(tmp_path: Path, data: dict) -> None:
    _load_text(tmp_path, yaml.safe_dump(data, allow_unicode=True))


@pytest.mark.parametrize("key, value", [("pool", True), ("pool", 5)])
def test_addresses_must_be_written_out(tmp_path, key, value):
    doc = yaml.safe_load(LOCAL.read_text())
    doc["calico"][key] = value
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="calico.pool: expected an address written out"):
        load_inventory(path)


def test_control_characters_of_a_key_are_shown_escaped(tmp_path: Path) -> None:
    """A key's escape sequences (a window title, colours) or line break reach no terminal."""
    path = write(tmp_path, MINIMAL + '    "\\e]0;pwned\\a\\e[31mred\\nline": 1\n')
    [problem] = problems(path)
    assert problem.path == "hosts.master.\\x1b]0;pwned\\x07\\x1b[31mred\\nline"
    assert all(c.isprintable() for c in str(problem))
