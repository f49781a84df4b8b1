"""xmppd.cluster.directory: the replicated session directory (pure)."""

from xmppd.cluster.directory import Entry, SessionDirectory


def test_put_get_resources_and_remote_resources():
    d = SessionDirectory("n1")
    d.put(Entry("alice@x/phone", "n1", True, 5))
    d.put(Entry("alice@x/laptop", "n2", True, 0))
    assert d.get("alice@x/phone").priority == 5
    assert sorted(e.jid for e in d.resources("alice@x")) == ["alice@x/laptop", "alice@x/phone"]
    assert [e.jid for e in d.remote_resources("alice@x")] == ["alice@x/laptop"]
    assert d.nodes() == {"n1": 1, "n2": 1}


def test_a_bind_of_the_same_full_jid_on_another_node_replaces_the_entry():
    d = SessionDirectory("n1")
    d.put(Entry("alice@x/r", "n1"))
    old = d.put(Entry("alice@x/r", "n2"))
    assert old.node == "n1" and d.get("alice@x/r").node == "n2"
    assert d.held_by("n1") == [] and len(d) == 1


def test_remove_only_when_held_by_the_given_node():
    d = SessionDirectory("n1")
    d.put(Entry("alice@x/r", "n2"))
    assert d.remove("alice@x/r", "n1") is None
    assert d.remove("alice@x/r", "n2").node == "n2"
    assert d.resources("alice@x") == [] and len(d) == 0


def test_drop_node_removes_everything_it_held():
    d = SessionDirectory("n1")
    for i in range(3):
        d.put(Entry(f"u{i}@x/r", "n2"))
    d.put(Entry("keep@x/r", "n1"))
    gone = d.drop_node("n2")
    assert sorted(e.jid for e in gone) == ["u0@x/r", "u1@x/r", "u2@x/r"]
    assert [e.jid for e in d.held_by("n1")] == ["keep@x/r"] and len(d) == 1


def test_entries_round_trip_on_the_wire():
    e = Entry("alice@x/r", "n1", True, -1)
    assert Entry.from_wire(e.to_wire()) == e
