"""Checks of the Calico lab in Python, with chainlab's pytest plugin:

    pytest examples/test_calico_lab.py --chainlab-inventory lab/local.yaml

`lab` is the provisioned lab; every probe leaves its run dir (report.html) under runs/.
"""


def test_other_nodes_cannot_reach_a_container(lab):
    probe = lab.probe("slave1", "web1")
    assert not probe.reached
    drop = probe.dropped_at(node="master", chain="cali-tw-*")
    assert drop and "Drop if no profiles matched" in drop.rule


def test_containers_reach_each_other_over_http_across_nodes(lab):
    probe = lab.probe("web1", "web3", tcp=80)
    assert probe.reached and probe.passed_through("master", "slave1")
    assert probe.path("master") == ["PREROUTING", "FORWARD", "POSTROUTING"]
    assert probe.path("slave1", "reply") == ["FORWARD"]


def test_a_container_is_masqueraded_to_other_nodes(lab):
    probe = lab.probe("web1", "slave1", udp=53)
    assert probe.reached
    assert any(note.startswith("SNAT on master") for note in probe.nat)


def test_only_containers_reach_the_containers_of_other_nodes(lab):
    matrix = lab.matrix(["slave1", "web2"], ["web1", "web3"])
    assert [c.source for c in matrix.cells if not c.reachable] == ["slave1"]
