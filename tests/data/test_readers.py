"""The dataset readers on tiny fixtures written in each benchmark's exact format."""
import json
import os
import pickle

import numpy as np
import pytest

import reader_fixtures as fx
from sasp.data import (
    IGNORE,
    DatasetError,
    FPRefCOCOReader,
    GRefCOCOReader,
    ReasonSegReader,
    RefCOCOReader,
    SampleError,
    load_image,
)
from sasp.data.reasonseg import reasonseg_mask

pytest.importorskip("pycocotools")


def by_ref(reader):
    return {(s.meta["ref_id"], s.meta["sent_index"]): s for s in reader}


# ---------------------------------------------------------------- RefCOCO / RefCOCO+ / RefCOCOg


@pytest.fixture
def refer_root(tmp_path):
    root = str(tmp_path / "refer_seg")
    for ds in ("refcoco", "refcoco+"):
        fx.write_refer(root, ds, "unc")
    fx.write_refer(root, "refcocog", "umd")
    return root


def test_refcoco_samples_order_and_fields(refer_root):
    r = RefCOCOReader(refer_root, "refcoco", "val")
    val = [ref for ref in fx.REFER_REFS if ref[3] == "val"]
    assert len(r) == sum(len(ref[4]) for ref in val)
    assert [(s.meta["ref_id"], s.meta["sent_index"]) for s in r] == [
        (ref[0], j) for ref in val for j in range(len(ref[4]))
    ]
    s = r[0]
    assert s.id == "refcoco/val/ref1/sent0"
    assert s.query == "the left man"  # stripped and lower-cased, as LISA's validation
    assert s.meta["raw"] == " The Left Man "
    assert s.has_target and s.answer == "Sure, [SEG]."
    assert s.image == os.path.join(refer_root, "images/mscoco/images/train2014", fx.IMAGES[1][0])
    assert (s.meta["height"], s.meta["width"], s.meta["ann_id"], s.meta["image_id"]) == (40, 60, 101, 1)
    assert r[-1].id == r[len(r) - 1].id
    with pytest.raises(IndexError):
        r[len(r)]


def test_refcoco_masks(refer_root):
    r = by_ref(RefCOCOReader(refer_root, "refcoco", "val"))
    m = r[(1, 0)].target()
    assert m.dtype == np.uint8 and m.shape == (40, 60)
    assert m.sum() == 300 and m[5:20, 10:30].all()  # polygon rectangle: exact count and place
    m = r[(2, 0)].target()
    assert m.max() == 1 and m.sum() == 175  # two overlapping polygons: their union
    assert np.array_equal(r[(4, 0)].target(), fx.disk_201())  # compressed RLE
    bars = r[(8, 0)].target()  # a list of compressed RLEs (LISA's form): union
    assert bars.sum() == 80 and bars[0:20, 2:6].all()
    rle = by_ref(RefCOCOReader(refer_root, "refcoco", "testA"))[(3, 0)].target()
    assert np.array_equal(rle, fx.rle_mask_103())  # uncompressed RLE
    empty = by_ref(RefCOCOReader(refer_root, "refcoco", "testB"))[(9, 0)].target()
    assert empty.shape == (32, 48) and empty.sum() == 0  # empty segmentation: LISA's empty mask


@pytest.mark.parametrize(
    "ref, words",
    [(5, "three or more points"), (6, "differs from the image"), (7, "not in instances.json"), (12, "malformed")],
)
def test_refcoco_broken_annotation_raises_sample_error(refer_root, ref, words):
    s = by_ref(RefCOCOReader(refer_root, "refcoco", "val"))[(ref, 0)]
    with pytest.raises(SampleError, match=words):
        s.target()


def test_refcoco_missing_image(refer_root):
    s = by_ref(RefCOCOReader(refer_root, "refcoco", "val"))[(10, 0)]
    assert s.target().sum() == 16  # the annotation is fine
    with pytest.raises(FileNotFoundError):
        load_image(s.image)
    assert load_image(by_ref(RefCOCOReader(refer_root))[(1, 0)].image).shape == (40, 60, 3)


def test_refcoco_plus_and_g(refer_root):
    plus = RefCOCOReader(refer_root, "refcoco+", "testA")
    assert plus.split_by == "unc" and [s.id for s in plus] == ["refcoco+/testA/ref3/sent0"]
    g = RefCOCOReader(refer_root, "refcocog", "test")
    assert g.split_by == "umd" and {s.meta["ref_id"] for s in g} == {3, 9}
    assert g.fingerprint() == {
        "name": "refcoco", "root": os.path.abspath(refer_root), "dataset": "refcocog", "split": "test",
        "split_by": "umd", "count": 2,
    }


def test_refcoco_bad_roots(refer_root, tmp_path):
    with pytest.raises(DatasetError, match="root not found"):
        RefCOCOReader(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"refcoco/refs\(google\)\.p"):
        RefCOCOReader(refer_root, "refcoco", split_by="google")
    with pytest.raises(DatasetError, match="no split 'testC'.*has val, testA, testB, train"):
        RefCOCOReader(refer_root, "refcoco", "testC")
    with pytest.raises(DatasetError, match="unknown dataset"):
        RefCOCOReader(refer_root, "refclef")
    os.remove(os.path.join(refer_root, "refcoco+", "instances.json"))
    with pytest.raises(DatasetError, match=r"refcoco\+/instances\.json"):
        RefCOCOReader(refer_root, "refcoco+")
    with open(os.path.join(refer_root, "refcocog", "instances.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetError, match=r"malformed JSON in .*refcocog/instances\.json"):
        RefCOCOReader(refer_root, "refcocog", "test")


def test_refcoco_bad_index_files(tmp_path):
    root = fx.write_refer(str(tmp_path), "refcoco")
    path = os.path.join(root, "refcoco", "refs(unc).p")
    with open(path, "wb") as f:
        pickle.dump([{"ref_id": 1, "split": "val", "thing": os.path.join}], f)  # names a function
    with pytest.raises(DatasetError, match=r"malformed pickle .*refs\(unc\)\.p"):
        RefCOCOReader(root)
    with open(path, "wb") as f:
        pickle.dump([{"ref_id": 1, "split": "val", "image_id": 1, "ann_id": "x", "sentences": []}], f)
    with pytest.raises(DatasetError, match="ann_id 'x'"):
        RefCOCOReader(root)
    with open(path, "wb") as f:
        pickle.dump([{"ref_id": 1, "split": "val", "image_id": 77, "ann_id": 101, "sentences": [{"sent": "a"}]}], f)
    with pytest.raises(DatasetError, match="instances.json: no image 77"):
        RefCOCOReader(root)


def test_refcoco_image_folder(tmp_path):
    root = fx.write_refer(str(tmp_path), "refcoco", image_dir="images/train2014")  # G_REFER's folder
    assert RefCOCOReader(root)[0].image.startswith(os.path.join(root, "images/train2014"))
    custom = tmp_path / "coco"
    custom.mkdir()
    assert RefCOCOReader(root, image_dir=str(custom))[0].image.startswith(str(custom))
    with pytest.raises(DatasetError, match="image folder not found"):
        RefCOCOReader(root, image_dir=str(tmp_path / "missing"))


# ---------------------------------------------------------------- gRefCOCO


def test_grefcoco(tmp_path):
    root = fx.write_grefcoco(str(tmp_path))
    r = GRefCOCOReader(root, "val")
    assert [s.id for s in r] == [f"grefcoco/val/ref{k}/sent0" for k in (1, 2, 3, 4, 5)]
    refs = by_ref(r)
    single, multi, none = refs[(1, 0)], refs[(2, 0)], refs[(3, 0)]
    assert single.target().sum() == 300 and single.meta["target_type"] == "single-target"
    m = multi.target()
    assert m.max() == 1 and m.sum() == 425  # union of ann 101 and ann 102
    assert multi.meta["ann_id"] == [101, 102] and multi.meta["target_type"] == "multi-target"
    assert multi.answer == "Sure,all boxes:[SEG]."  # GSVA's validation answer, verbatim
    assert not none.has_target and none.meta["no_target"] is True and none.meta["ann_id"] == [-1]
    z = none.target()
    assert z.shape == (40, 60) and z.sum() == 0
    assert none.answer == "Sure,the giraffe:[REJ]."
    with pytest.raises(SampleError, match="no_target is false"):
        refs[(4, 0)].target()
    with pytest.raises(SampleError, match="mixes -1"):
        refs[(5, 0)].target()
    assert GRefCOCOReader(root, "testA")[0].target().sum() == fx.disk_201().sum()
    assert GRefCOCOReader(root).fingerprint()["count"] == 5


def test_grefcoco_bad_root(tmp_path):
    with pytest.raises(DatasetError, match=r"grefcoco/grefs\(unc\)\.json"):
        GRefCOCOReader(str(tmp_path))
    root = fx.write_grefcoco(str(tmp_path))
    with open(os.path.join(root, "grefcoco", "grefs(unc).json"), "w") as f:
        json.dump({"not": "a list"}, f)
    with pytest.raises(DatasetError, match="expected a list of refs"):
        GRefCOCOReader(root)


# ---------------------------------------------------------------- FP-RefCOCO


@pytest.mark.parametrize("dataset", ["fprefcoco", "fprefcoco+", "fprefcocog"])
def test_fprefcoco(tmp_path, dataset):
    root = fx.write_fprefcoco(str(tmp_path), dataset)
    r = FPRefCOCOReader(root, dataset, "val")
    assert len(r) == 6
    refs = by_ref(r)
    true, false = refs[(1, 0)], refs[(1, 1)]
    assert true.has_target and true.target().sum() == 300
    assert true.answer == "Confirmed, here's the segmentation: [SEG]."
    assert not false.has_target and false.target().sum() == 0 and false.target().shape == (40, 60)
    assert false.meta["is_false_premise"] and false.meta["gt_sent"] == "Man in red"
    assert false.answer == "While the man in blue is not present, the image does include man in red."
    dog, boxes = refs[(2, 0)], refs[(2, 1)]  # SESAME's "exist" flag
    assert not dog.has_target and dog.answer == "No presence of a dog detected in this image."
    assert boxes.has_target and boxes.target().sum() == 175
    assert refs[(3, 0)].has_target  # no flag: the premise holds
    assert refs[(4, 0)].target().sum() == 425  # a list of annotation ids: union
    assert r.fingerprint()["split_by"] == "berkeley_exclude_unified"


def test_fprefcoco_bad_root(tmp_path):
    with pytest.raises(DatasetError, match=r"fprefcoco\+/refs\(berkeley_exclude_unified\)\.p"):
        FPRefCOCOReader(str(tmp_path), "fprefcoco+")


# ---------------------------------------------------------------- ReasonSeg


def test_reasonseg_samples(tmp_path):
    root = fx.write_reasonseg(str(tmp_path / "ReasonSeg"))
    r = ReasonSegReader(root, "val")
    assert [s.id for s in r] == [f"ReasonSeg/val/img_{c}" for c in "abcd"]
    a = r[0]
    assert a.query == "Where would you sit in the café?"  # first text, stripped; cp1252 JSON
    assert a.meta["is_sentence"] is True and a.meta["num_queries"] == 2 and a.answer == "Sure, [SEG]."
    assert r[1].meta["is_sentence"] is False
    everything = ReasonSegReader(root, "val", all_queries=True)
    assert [s.id for s in everything][:2] == ["ReasonSeg/val/img_a/q0", "ReasonSeg/val/img_a/q1"]
    assert everything[1].query == "second query" and len(everything) == 5
    assert r.fingerprint() == {"name": "reasonseg", "root": os.path.abspath(root), "dataset": "ReasonSeg",
                               "split": "val", "all_queries": False, "count": 4}


def test_reasonseg_masks(tmp_path):
    root = fx.write_reasonseg(str(tmp_path / "ReasonSeg"))
    a, b, c, d = ReasonSegReader(root, "val")
    m = a.target()
    assert m.shape == (30, 40) and (m == 1).sum() == 161 and (m == IGNORE).sum() == 15
    assert (m[8:11, 8:13] == IGNORE).all()  # the smaller ignore is drawn over the target
    m = b.target()
    assert (m == 1).sum() == 15 and (m == IGNORE).sum() == 636 and (m[10:13, 10:15] == 1).all()
    m = c.target()
    assert m.shape == (20, 10) and m.sum() == 200  # size after the EXIF rotation
    assert load_image(c.image).shape == (20, 10, 3)
    with pytest.raises(SampleError, match="NaN"):
        d.target()
    os.remove(a.image)
    with pytest.raises(SampleError, match="image not found"):
        a.target()


def test_reasonseg_mask_ties_and_labels():
    """Equal areas: LISA's argsort reversed draws the later polygon first, so the earlier
    one ends on top; any label containing "ignore" is 255, any other (not "flag") is 1."""
    sq = [[0, 0], [3, 0], [3, 3], [0, 3]]
    sq2 = [[2, 2], [5, 2], [5, 5], [2, 5]]
    m = reasonseg_mask([{"label": "target", "points": sq}, {"label": "Ignore_1", "points": sq2}], 8, 8)
    assert m[2, 2] == 1 and (m == 1).sum() == 16 and (m == IGNORE).sum() == 12
    m = reasonseg_mask([{"label": "ignore", "points": sq}, {"label": "Person", "points": sq2}], 8, 8)
    assert m[2, 2] == IGNORE and (m == 1).sum() == 12
    with pytest.raises(SampleError, match="shape 0 has no string 'label'"):
        reasonseg_mask([{"points": sq}], 8, 8)
    with pytest.raises(SampleError, match=r"shape 1: points must be"):
        reasonseg_mask([{"label": "target", "points": sq}, {"label": "target", "points": [1, 2, 3]}], 8, 8)


def test_reasonseg_bad_roots(tmp_path):
    root = fx.write_reasonseg(str(tmp_path / "ReasonSeg"))
    with pytest.raises(DatasetError, match=r"ReasonSeg/test"):
        ReasonSegReader(root, "test")
    os.remove(os.path.join(root, "val", "img_b.json"))
    with pytest.raises(DatasetError, match=r"missing annotation file: .*img_b\.json"):
        ReasonSegReader(root, "val")
    with open(os.path.join(root, "val", "img_b.json"), "w") as f:
        json.dump({"shapes": [], "is_sentence": False}, f)
    with pytest.raises(DatasetError, match=r"img_b\.json: 'text'"):
        ReasonSegReader(root, "val")
    empty = tmp_path / "empty" / "val"
    empty.mkdir(parents=True)
    with pytest.raises(DatasetError, match="no \\*.jpg images"):
        ReasonSegReader(str(tmp_path / "empty"), "val")
