"""`dfwatch-train dataset` on the miniature Celeb-DF tree: content, detector path, bad videos, resume, dedupe."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tests.trainer.conftest import MINI_STORE_ARGS
from tests.trainer.minitree import MiniTree, render_clip, write_clip, write_zero_frame_clip
from trainer.cli import main
from trainer.paper.dataset import DatasetConfig, build_dataset
from trainer.paper.dedupe import dhash, hamming, keep_distinct
from trainer.store import FaceStore, FaceStoreWriter


def _frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _copy_tree(tree: MiniTree, dst: Path) -> Path:
    shutil.copytree(tree.root, dst)
    return dst


def test_the_store_built_from_the_mini_tree(mini_faces_h5: Path, mini_celebdf: MiniTree):
    with FaceStore(mini_faces_h5) as store:
        a = store.attrs
        assert (a["whole_frames"], a["crop_size"], a["frames_per_video"], a["split_protocol"]) == (
            True,
            64,
            6,
            "identity",
        )
        assert a["detector_sha256"] == "" and a["source"] == str(mini_celebdf.root.resolve())
        assert a["augment_copies"] == 1 and a["seed"] == 0 and a["all_videos"]
        log = {e["path"]: e for e in store.video_log()}
        assert set(log) == set(mini_celebdf.videos)
        assert {p for p, e in log.items() if e["status"] != "ok"} == {"Celeb-synthesis/id0_id2_0000.mp4"}
        assert log["Celeb-synthesis/id0_id2_0000.mp4"]["status"] == "excluded"

        orig = store.indices(originals_only=True)
        video, split, label = store.meta("video")[orig], store.meta("split")[orig], store.meta("label")[orig]
        assert set(video.tolist()) == set(mini_celebdf.videos) - {"Celeb-synthesis/id0_id2_0000.mp4"}
        assert all(label[video == v][0] == mini_celebdf.videos[v] for v in set(video.tolist()))
        assert set(video[split == 2].tolist()) == set(mini_celebdf.test)  # the official test list is the test set
        people = {
            s: set(store.meta("identity")[orig][split == s]) | set(store.meta("identity_src")[orig][split == s]) - {""}
            for s in (0, 1)
        }
        assert people[0] and people[1] and not people[0] & people[1]  # nobody on both sides of train/val
        for s in (0, 1, 2):
            assert set(label[split == s].tolist()) == {0, 1}
        assert all(1 <= (video == v).sum() <= 6 for v in set(video.tolist()))
        assert np.isnan(store.meta("det_score")).all()
        np.testing.assert_array_equal(store.meta("box")[orig], np.tile([0, 0, 128, 128], (len(orig), 1)))

        # a stored crop is its video's frame, resized: the frame index names the right frame
        row = int(orig[video == "Celeb-synthesis/id2_id3_0000.mp4"][2])
        frame = _frames_of(mini_celebdf.root / "Celeb-synthesis/id2_id3_0000.mp4")[store.meta("frame")[row]]
        np.testing.assert_array_equal(store.crops(row), cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA))


def test_detector_path_with_the_placeholder(mini_celebdf: MiniTree, model_dir: Path, tmp_path: Path):
    """engines.Detector + crop_faces on real decoded frames. The placeholder is untrained: at
    --det-conf 0.001 its boxes are noise, so this checks the chain and the crop geometry, not faces."""
    from engines import Detections, crop_faces, load_manifest

    out = tmp_path / "faces.h5"
    det = model_dir / "face_detector.onnx"
    args = [
        "dataset",
        "--celebdf",
        str(mini_celebdf.root),
        "--out",
        str(out),
        "--real",
        "2",
        "--fake",
        "2",
        "--test-fraction",
        "0.5",
        "--frames",
        "2",
        "--crop-size",
        "48",
        "--detector",
        str(det),
        "--det-conf",
        "0.001",
        "--augment-copies",
        "0",
        "--no-progress",
    ]
    assert main(args) == 0
    with FaceStore(out) as store:
        assert store.attrs["detector_sha256"] == load_manifest(det).sha256 and not store.attrs["whole_frames"]
        assert len(store) > 0 and (store.meta("det_score") >= 0.001).all()
        assert set(store.meta("video").tolist()) <= set(mini_celebdf.videos)
        for row in range(len(store)):
            path = mini_celebdf.root / store.meta("video")[row]
            frame = _frames_of(path)[store.meta("frame")[row]]
            dets = Detections(store.meta("box")[row][None], store.meta("det_score")[row][None], np.zeros(1))
            np.testing.assert_array_equal(store.crops(row), crop_faces([frame], dets, size=48, margin=0.25)[0])


def test_videos_without_a_face_are_counted_and_listed(mini_celebdf: MiniTree, model_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "faces.h5"
    args = [
        "dataset",
        "--celebdf",
        str(mini_celebdf.root),
        "--out",
        str(out),
        "--real",
        "1",
        "--fake",
        "1",
        "--frames",
        "2",
        "--crop-size",
        "32",
        "--detector",
        str(model_dir / "face_detector.onnx"),
        "--no-progress",
    ]
    assert main(args) == 0  # the placeholder at its manifest threshold finds nothing
    err = capsys.readouterr().err
    assert "videos: 2 no_face" in err and err.count(": no_face") == 2
    with FaceStore(out) as store:
        assert len(store) == 0 and [e["status"] for e in store.video_log()] == ["no_face", "no_face"]
        assert all(e["frames"] == 2 for e in store.video_log())


def test_unreadable_zero_frame_and_truncated_videos(mini_celebdf: MiniTree, tmp_path: Path, capsys):
    tree = _copy_tree(mini_celebdf, tmp_path / "tree")
    (tree / "Celeb-real/id5_0000.mp4").write_bytes(b"\x00garbage, not a video" * 50)
    write_zero_frame_clip(tree / "Celeb-real/id6_0000.mp4")
    good = (tree / "Celeb-real/id3_0001.mp4").read_bytes()
    (tree / "Celeb-real/id7_0000.mp4").write_bytes(good[: len(good) // 2])
    out = tmp_path / "faces.h5"
    assert main(["dataset", "--celebdf", str(tree), "--out", str(out), *MINI_STORE_ARGS]) == 0
    err = capsys.readouterr().err
    assert "skipped Celeb-real/id5_0000.mp4: unreadable (cannot open" in err
    assert "skipped Celeb-real/id6_0000.mp4: no_frames (no video stream)" in err
    assert "partly read Celeb-real/id7_0000.mp4: the video ends at frame" in err
    with FaceStore(out) as store:
        log = {e["path"]: e for e in store.video_log()}
        assert log["Celeb-real/id5_0000.mp4"]["status"] == "unreadable"
        assert log["Celeb-real/id6_0000.mp4"]["status"] == "no_frames"
        cut = log["Celeb-real/id7_0000.mp4"]
        assert cut["status"] == "ok" and 0 < cut["faces"] < 6 and "the video ends at frame" in cut["detail"]
        assert "Celeb-real/id7_0000.mp4" in set(store.meta("video").tolist())
        assert sum(e["status"] == "ok" for e in log.values()) >= 14  # the others are all there


def _mini_cfg(tree: Path, out: Path, **kw) -> DatasetConfig:
    return DatasetConfig(
        **{"celebdf": tree, "out": out, "all_videos": True, "whole_frames": True, "frames": 6, "crop_size": 64} | kw
    )


def test_an_interrupted_build_resumes_to_the_same_store(
    mini_faces_h5: Path, mini_celebdf: MiniTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "faces.h5"
    finish = FaceStoreWriter.finish_video
    calls = {"n": 0}

    def interrupted(self, video, **kw):  # Ctrl-C after the 6th video's rows were written, before its commit
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return finish(self, video, **kw)

    monkeypatch.setattr(FaceStoreWriter, "finish_video", interrupted)
    first = build_dataset(_mini_cfg(mini_celebdf.root, out), progress=False)
    assert first.interrupted and "INTERRUPTED: rerun the same command to resume" in first.format()
    with FaceStore(out) as store:
        assert len(store.video_log()) == 5
        kept = len(store)
    monkeypatch.setattr(FaceStoreWriter, "finish_video", finish)
    second = build_dataset(_mini_cfg(mini_celebdf.root, out), progress=False)
    assert not second.interrupted and second.resumed == 5
    assert second.shared_people["train & val"] == 0 and second.split_videos == 0
    with FaceStore(out) as store, FaceStore(mini_faces_h5) as reference:
        assert len(store) > kept
        assert len(store.video_log()) == 15 and len({e["path"] for e in store.video_log()}) == 15
        assert store.fingerprint() == reference.fingerprint()  # the same rows as an uninterrupted build
        np.testing.assert_array_equal(store.crops(store.indices()), reference.crops(reference.indices()))
    third = build_dataset(_mini_cfg(mini_celebdf.root, out), progress=False)
    assert third.resumed == 15 and third.fingerprint == second.fingerprint  # nothing left to do


def test_resume_with_other_options_and_bad_input_are_clear_errors(
    mini_celebdf: MiniTree, mini_faces_h5: Path, tmp_path: Path, capsys
):
    out = tmp_path / "faces.h5"
    shutil.copy(mini_faces_h5, out)
    base = ["dataset", "--celebdf", str(mini_celebdf.root), "--out", str(out), "--no-progress"]
    assert main([*base, "--all", "--whole-frames", "--frames", "6", "--crop-size", "96"]) == 1
    assert "crop_size: file has 64, asked for 96" in capsys.readouterr().err
    assert main([*base, *MINI_STORE_ARGS[:-1], "--augment-splits", "train,dev"]) == 1
    assert "unknown augment splits ['dev']; valid: ['train', 'val', 'test']" in capsys.readouterr().err
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5" * 10)
    assert main(["dataset", "--celebdf", str(mini_celebdf.root), "--out", str(broken), *MINI_STORE_ARGS]) == 1
    assert "not an HDF5 file (corrupt or truncated?)" in capsys.readouterr().err
    empty = tmp_path / "empty-tree"
    (empty / "Celeb-real").mkdir(parents=True)
    assert main(["dataset", "--celebdf", str(empty), "--out", str(tmp_path / "x.h5"), "--whole-frames"]) == 1
    assert "missing Celeb-synthesis/, YouTube-real/, List_of_testing_videos.txt" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()  # nothing written for a bad tree


def test_near_duplicate_frames_are_dropped(mini_celebdf: MiniTree, tmp_path: Path):
    tree = _copy_tree(mini_celebdf, tmp_path / "tree")
    frames, _ = render_clip("Celeb-real/id9_0000.mp4", size=128, n_frames=10, fps=10, static=True)
    write_clip(tree / "Celeb-real/id9_0000.mp4", frames, fps=10)  # a face that never moves
    deduped = build_dataset(_mini_cfg(tree, tmp_path / "a.h5", augment_copies=0), progress=False)
    everything = build_dataset(_mini_cfg(tree, tmp_path / "b.h5", augment_copies=0, dedupe_hamming=-1), progress=False)
    with FaceStore(tmp_path / "a.h5") as a, FaceStore(tmp_path / "b.h5") as b:
        assert (a.meta("video") == "Celeb-real/id9_0000.mp4").sum() == 1
        assert (b.meta("video") == "Celeb-real/id9_0000.mp4").sum() == 6
        assert len(a) == len(b) - deduped.duplicates and everything.duplicates == 0
        moving = a.meta("video") == "Celeb-real/id1_0000.mp4"
        assert moving.sum() >= 4  # a moving face keeps most of its frames


def test_dhash_and_keep_distinct():
    clip, _ = render_clip("Celeb-real/id0_0000.mp4", size=96, n_frames=10, fps=10)
    base, later = clip[0], clip[9]  # the same person 0.9 s later: moved and talking
    ok, jpeg = cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, 70])
    recompressed = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    brighter = np.clip(base.astype(np.int16) + 6, 0, 255).astype(np.uint8)
    other = render_clip("Celeb-real/id2_0000.mp4", size=96, n_frames=1, fps=10)[0][0]
    hashes = dhash(np.stack([base, recompressed, brighter, other, later]))
    d = hamming(hashes[0], hashes)
    assert hashes.dtype == np.uint64 and d.dtype == np.int64
    assert d[1] <= 4 and d[2] == 0, d  # recompressed, brighter: near-duplicates
    assert d[3] > 16 and d[4] > 8, d  # another person; the same one moved
    assert keep_distinct(hashes, max_distance=4).tolist() == [True, False, False, True, True]
    assert keep_distinct(hashes, max_distance=0).tolist() == [True, d[1] > 0, False, True, True]
    assert keep_distinct(hashes, max_distance=-1).all()
    assert keep_distinct(hashes[:0], max_distance=2).shape == (0,)


def test_paper_split_leaks_frames_and_copies_follow_their_frame(mini_celebdf: MiniTree, tmp_path: Path):
    out = tmp_path / "paper.h5"
    summary = build_dataset(_mini_cfg(mini_celebdf.root, out, split="paper", frames=8), progress=False)
    with FaceStore(out) as store:
        assert store.attrs["split_protocol"] == "paper"
        assert [e["status"] for e in store.video_log()] == ["ok"] * 15  # no identity exclusions
        orig = store.indices(originals_only=True)
        video, split = store.meta("video")[orig], store.meta("split")[orig]
        spread = [v for v in set(video.tolist()) if len(set(split[video == v].tolist())) > 1]
        assert len(spread) >= 8  # frames of one video on several sides: the leakage, visible
        copies = np.flatnonzero(store.meta("augmented") > 0)
        origin = store.meta("origin")[copies]
        np.testing.assert_array_equal(store.meta("split")[copies], store.meta("split")[origin])
        assert set(store.meta("split")[copies].tolist()) == {0}
    assert summary.rows[("test", "real")] + summary.rows[("test", "fake")] == int((split == 2).sum())
    assert summary.split_videos == len(spread) and summary.shared_people["train & test"] > 0
    assert f"videos split across sides: {len(spread)}" in summary.format()
