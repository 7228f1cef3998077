"""The registry of data kinds that ``sasp compare`` and ``sasp train`` share
(``sasp.data.readers``), its KEY=VALUE options, and the list-backed reader base."""
import argparse

import numpy as np
import pytest

from sasp.data import readers
from sasp.data.base import DatasetError, IndexedReader
from sasp.data.readers import open_reader, parse_option, reader_factory
from sasp.data.synthetic import SyntheticReasonSeg


@pytest.fixture
def kinds(monkeypatch):
    """The registry, restored after the test."""
    monkeypatch.setattr(readers, "DATA_KINDS", dict(readers.DATA_KINDS))
    return readers.DATA_KINDS


@pytest.mark.parametrize("kind", sorted(readers.DATA_KINDS))
def test_every_built_in_kind_resolves_to_a_factory(kind):
    assert callable(reader_factory(kind))


def test_unknown_and_unavailable_kinds_are_one_line_dataset_errors(kinds):
    with pytest.raises(DatasetError, match=r"unknown data kind 'nope'; known: .*refcoco.*synthetic") as err:
        reader_factory("nope")
    assert "\n" not in str(err.value)
    readers.register_data_kind("later", "sasp.data.not_written_yet:Reader")
    with pytest.raises(DatasetError, match="data kind 'later' is not available here: cannot import sasp.data.not_written_yet"):
        reader_factory("later")
    with pytest.raises(DatasetError, match="has no attribute 'nothing'"):
        reader_factory("sasp.data.readers:nothing")


def test_module_attribute_and_registered_callables(kinds):
    assert reader_factory("sasp.data.readers:synthetic") is readers.synthetic

    def mine(root, split="val", n=2):
        return SyntheticReasonSeg(split, n)

    readers.register_data_kind("mine", mine)
    assert reader_factory("mine") is mine
    reader = open_reader("mine", None, "test", {"n": 3})
    assert len(reader) == 3 and reader.fingerprint()["split"] == "test"


def test_open_reader_split_default_root_and_options(tmp_path):
    assert open_reader("synthetic", options={"size": 4}).fingerprint()["split"] == "val"  # the reader's default
    assert len(open_reader(readers.synthetic, str(tmp_path), "train", {"size": 5, "seed": 1})) == 5
    with pytest.raises(DatasetError, match="dataset root not found"):
        open_reader("synthetic", str(tmp_path / "nowhere"))
    with pytest.raises(TypeError):  # an option the factory does not take: the commands name their flags
        open_reader("refcoco", str(tmp_path), options={"colour": "red"})


def test_both_commands_read_the_one_registry(kinds, tmp_path):
    from sasp.evaluate import command as compare_command
    from sasp.train import command as train_command

    readers.register_data_kind("mine", lambda root, split="val", size=2: SyntheticReasonSeg(split, size))
    assert len(train_command.build_reader("mine", None, "test", {"size": 3})) == 3
    args = argparse.Namespace(data="mine", root=str(tmp_path), split="test", data_args={"size": 4}, limit=None)
    assert len(compare_command.build_reader(args)) == 4
    compare_command.register_data_kind("theirs", readers.synthetic, protocol="gsva")
    assert readers.DATA_KINDS["theirs"] is readers.synthetic
    assert train_command.build_reader("theirs", None, "val", {"size": 2}).fingerprint()["count"] == 2


def test_parse_option():
    assert parse_option("n=3") == ("n", 3)
    assert parse_option("ids=[1, 2]") == ("ids", [1, 2])
    assert parse_option("name=lisa") == ("name", "lisa")
    assert parse_option("eq=a=b") == ("eq", "a=b")
    for bad in ("novalue", "=3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            parse_option(bad)


class _Squares(IndexedReader):
    """n samples whose target is filled with the sample's index."""

    name = "squares"
    fingerprint_fields = ("side",)

    def __init__(self, n: int, side: int = 2) -> None:
        from types import SimpleNamespace

        self.side = side
        self._items = [SimpleNamespace(id=f"sq/{i}", image=np.zeros((side, side, 3), np.uint8), query=f"q{i}",
                                       has_target=i % 2 == 0, answer=None, meta={"i": i}) for i in range(n)]

    def _target(self, index: int) -> np.ndarray:
        return np.full((self.side, self.side), index, np.uint8)


def test_indexed_reader_sequence_protocol_and_fingerprint():
    reader = _Squares(3)
    assert len(reader) == 3 and [s.id for s in reader] == ["sq/0", "sq/1", "sq/2"]
    last = reader[-1]
    assert last.id == "sq/2" and last.query == "q2" and last.has_target and last.meta == {"i": 2}
    assert (last.target() == 2).all() and not reader[1].has_target
    last.meta["i"] = 99  # a sample's meta is its own copy
    assert reader[2].meta == {"i": 2}
    for bad in (3, -4):
        with pytest.raises(IndexError, match=f"index {bad} out of range for 3 samples"):
            reader[bad]
    assert reader.fingerprint() == {"name": "squares", "side": 2, "count": 3}
