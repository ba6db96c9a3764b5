"""The face-crop HDF5 store: round trip, resume, corrupt files, fingerprint, torch Dataset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from trainer.store import FaceDataset, FaceStore, FaceStoreWriter, StoreError

S = 16
BUILD = {
    "crop_size": S,
    "crop_margin": 0.25,
    "whole_frames": False,
    "source": "/data/Celeb-DF-v2",
    "frames_per_video": 3,
    "detector_sha256": "abc123",
    "split_protocol": "identity",
}


def _crops(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, S, S, 3), dtype=np.uint8)


def _write_video(w: FaceStoreWriter, video: str, *, n: int, label: int, split: str, seed: int) -> np.ndarray:
    crops = _crops(n, seed)
    boxes = np.tile(np.array([[1, 2, 30, 40]], np.float32), (n, 1)) + np.arange(n, dtype=np.float32)[:, None]
    w.append(
        crops,
        label=label,
        video=video,
        identity="id0",
        identity_src="id7" if label else "",
        frame=np.arange(n) * 10,
        box=boxes,
        det_score=np.linspace(0.5, 0.9, n),
        split=split,
    )
    w.finish_video(video, frames=n, faces=n)
    return crops


def test_round_trip_keeps_every_column(tmp_path: Path):
    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        fake = _write_video(w, "Celeb-synthesis/id0_id7_0000.mp4", n=3, label=1, split="train", seed=1)
        real = _write_video(w, "Celeb-real/id0_0001.mp4", n=2, label=0, split="test", seed=2)
        rows = w.append(
            fake[::-1].copy(),
            label=1,
            video="Celeb-synthesis/id0_id7_0000.mp4",
            identity="id0",
            identity_src="id7",
            frame=np.array([20, 10, 0]),
            box=np.zeros((3, 4)),
            det_score=0.7,
            split="train",
            augmented=1,
            origin=np.array([2, 1, 0]),
        )
        w.finish_video("Celeb-synthesis/id0_id7_0000.mp4#aug")
    assert rows.tolist() == [5, 6, 7]
    with FaceStore(path) as store:
        assert len(store) == 8
        assert {k: store.attrs[k] for k in BUILD} == BUILD
        assert store.attrs["schema"] == 1 and store.attrs["created"]
        np.testing.assert_array_equal(store.crops(np.arange(3)), fake)
        np.testing.assert_array_equal(store.crops(4), real[1])
        np.testing.assert_array_equal(store.crops(np.array([4, 0, 4])), np.stack([real[1], fake[0], real[1]]))
        assert store.meta("label").tolist() == [1, 1, 1, 0, 0, 1, 1, 1]
        assert store.meta("video")[3] == "Celeb-real/id0_0001.mp4"
        assert store.meta("identity_src").tolist()[2:5] == ["id7", "", ""]
        assert store.meta("frame").tolist() == [0, 10, 20, 0, 10, 20, 10, 0]
        np.testing.assert_allclose(store.meta("box")[1], [2, 3, 31, 41])
        assert store.meta("box").shape == (8, 4) and store.meta("det_score").dtype == np.float32
        assert store.meta("origin").tolist() == [0, 1, 2, 3, 4, 2, 1, 0]
        assert store.meta("augmented").tolist() == [0] * 5 + [1] * 3
        assert store.indices("train").tolist() == [0, 1, 2, 5, 6, 7]
        assert store.indices("train", originals_only=True).tolist() == [0, 1, 2]
        assert store.indices("test").tolist() == [3, 4]
        assert store.indices("val").tolist() == []
        logged = [v["path"] for v in store.video_log()]
        assert logged[:2] == ["Celeb-synthesis/id0_id7_0000.mp4", "Celeb-real/id0_0001.mp4"]
        with pytest.raises(StoreError, match=r"unknown split 'dev'; valid: \['train', 'val', 'test'\]"):
            store.indices("dev")
        with pytest.raises(StoreError, match=r"unknown column 'score'; valid: \["):
            store.meta("score")
        with pytest.raises(IndexError):
            store.crops(8)


def test_dataset_is_chunked_and_compressed(tmp_path: Path):
    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        w.append(
            np.zeros((50, S, S, 3), np.uint8),
            label=0,
            video="v.mp4",
            identity="id1",
            identity_src="",
            frame=np.arange(50),
            box=np.zeros((50, 4)),
            det_score=1.0,
            split="train",
        )
        w.finish_video("v.mp4")
    with h5py.File(path) as h5:
        for name in ("crops", "label", "video", "identity", "identity_src", "frame", "box", "split", "origin"):
            assert h5[name].chunks is not None and h5[name].compression == "gzip", name
        assert h5["crops"].chunks[1:] == (S, S, 3)
        assert h5["crops"].id.get_storage_size() < 50 * S * S * 3 / 10  # zeros compress


def test_resume_appends_and_drops_an_interrupted_video(tmp_path: Path):
    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        _write_video(w, "a.mp4", n=3, label=0, split="train", seed=1)
        w.append(
            _crops(2, 9),
            label=1,
            video="b.mp4",
            identity="id2",
            identity_src="id0",
            frame=np.arange(2),
            box=np.zeros((2, 4)),
            det_score=0.5,
            split="val",
        )  # (interrupted: never finished)
    with FaceStore(path) as store:
        assert len(store) == 3  # the reader sees committed rows only
    with FaceStoreWriter(path, **BUILD) as w:
        assert w.done_videos() == {"a.mp4"}
        assert w.rows == 3  # b.mp4's partial rows were dropped
        _write_video(w, "b.mp4", n=4, label=1, split="val", seed=2)
        w.finish_video("broken.mp4", status="unreadable", detail="Invalid data found")
        assert w.done_videos() == {"a.mp4", "b.mp4", "broken.mp4"}
    with FaceStore(path) as store:
        assert len(store) == 7
        assert store.meta("video").tolist() == ["a.mp4"] * 3 + ["b.mp4"] * 4
        assert store.video_log()[-1] == {
            "path": "broken.mp4",
            "status": "unreadable",
            "frames": 0,
            "faces": 0,
            "detail": "Invalid data found",
        }


def test_resume_redoes_a_video_whose_commit_was_interrupted(tmp_path: Path):
    """Interrupted inside finish_video: logged as done but its rows not committed -> redone, not lost."""
    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        _write_video(w, "a.mp4", n=3, label=0, split="train", seed=1)
        committed = int(w._file.attrs["rows"])
        _write_video(w, "b.mp4", n=2, label=1, split="val", seed=2)
        w._file.attrs["rows"] = committed  # the interrupt fell between the log row and the rows attribute
        log = w._file["videos"]
        log["path"].resize(3, axis=0)  # and a third log row got only its path
        log["path"][2] = "c.mp4"
    with FaceStoreWriter(path, **BUILD) as w:
        assert w.done_videos() == {"a.mp4"} and w.rows == 3
        _write_video(w, "b.mp4", n=2, label=1, split="val", seed=2)
    with FaceStore(path) as store:
        assert store.meta("video").tolist() == ["a.mp4"] * 3 + ["b.mp4"] * 2
        assert [e["path"] for e in store.video_log()] == ["a.mp4", "b.mp4"]


def test_resume_with_other_options_is_refused(tmp_path: Path):
    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        _write_video(w, "a.mp4", n=1, label=0, split="train", seed=1)
    with (
        pytest.raises(StoreError, match=r"crop_size: file has 16, asked for 32.*same options or write to a new file"),
        FaceStoreWriter(path, **BUILD | {"crop_size": 32}),
    ):
        pass
    with FaceStore(path) as store:  # the refused open left the file intact
        assert len(store) == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"this is not hdf5" * 100), id="not-hdf5"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]), id="truncated"),
        pytest.param(lambda p: _drop_dataset(p, "split"), id="missing-column"),
        pytest.param(lambda p: _set_attr(p, "schema", 99), id="other-schema"),
    ],
)
def test_corrupt_file_is_a_store_error(tmp_path: Path, damage):
    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        _write_video(w, "a.mp4", n=40, label=0, split="train", seed=1)
    damage(path)
    with pytest.raises(StoreError, match=str(path)):
        store = FaceStore(path)
        store.crops(np.arange(40))  # truncation may only show when the crops are read
        store.fingerprint()


def test_missing_file_and_foreign_hdf5(tmp_path: Path):
    with pytest.raises(StoreError, match="no such face store; build one with `dfwatch-train dataset`"):
        FaceStore(tmp_path / "nope.h5")
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as h5:
        h5["weights"] = np.arange(3)
    with pytest.raises(StoreError, match="not a face store"), FaceStoreWriter(foreign, **BUILD):
        pass
    with h5py.File(foreign) as h5:  # never overwritten
        assert h5["weights"][...].tolist() == [0, 1, 2]


def test_bad_rows_are_refused_with_the_expected_shape(tmp_path: Path):
    with FaceStoreWriter(tmp_path / "f.h5", **BUILD) as w:
        with pytest.raises(StoreError, match=r"crops must be uint8 \(n, 16, 16, 3\), got float32"):
            w.append(
                np.zeros((1, S, S, 3), np.float32),
                label=0,
                video="v",
                identity="i",
                identity_src="",
                frame=0,
                box=np.zeros((1, 4)),
                det_score=1,
                split=0,
            )
        with pytest.raises(StoreError, match=r"label must be 0 \(real\) or 1 \(fake\), got \[2\]"):
            w.append(
                _crops(1, 0),
                label=2,
                video="v",
                identity="i",
                identity_src="",
                frame=0,
                box=np.zeros((1, 4)),
                det_score=1,
                split=0,
            )
        with pytest.raises(StoreError, match=r"column 'frame' has shape \(3,\), expected \(2,\)"):
            w.append(
                _crops(2, 0),
                label=0,
                video="v",
                identity="i",
                identity_src="",
                frame=np.arange(3),
                box=np.zeros((2, 4)),
                det_score=1,
                split=0,
            )
        assert w.rows == 0


def _build(path: Path, *, labels=(0, 1), protocol="identity") -> str:
    with FaceStoreWriter(path, **BUILD | {"split_protocol": protocol}) as w:
        for k, label in enumerate(labels):
            _write_video(w, f"v{k}.mp4", n=2, label=label, split="train", seed=k)
    with FaceStore(path) as store:
        return store.fingerprint()


def test_fingerprint_is_stable_and_changes_with_the_data(tmp_path: Path):
    a = _build(tmp_path / "a.h5")
    with FaceStore(tmp_path / "a.h5") as store:
        assert store.fingerprint() == a  # reopened
    assert _build(tmp_path / "b.h5") == a  # identical rebuild (another creation time)
    assert _build(tmp_path / "c.h5", labels=(0, 0)) != a  # a label changed
    assert _build(tmp_path / "d.h5", protocol="paper") != a  # a build option changed
    with h5py.File(tmp_path / "a.h5", "a") as h5:
        h5["split"][0] = 1
    with FaceStore(tmp_path / "a.h5") as store:
        assert store.fingerprint() != a  # a split changed
    assert len(a) == 64


def test_face_dataset_yields_chw_floats_and_labels(tmp_path: Path):
    import torch

    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        crops = _write_video(w, "a.mp4", n=3, label=1, split="train", seed=1)
        w.append(
            crops,
            label=1,
            video="a.mp4",
            identity="id0",
            identity_src="id7",
            frame=np.arange(3),
            box=np.zeros((3, 4)),
            det_score=1.0,
            split="val",
            augmented=1,
            origin=np.arange(3),
        )
        w.finish_video("a.mp4#aug")
    ds = FaceDataset(path, "train")
    x, y = ds[1]
    assert x.shape == (3, S, S) and x.dtype == torch.float32 and y.dtype == torch.float32
    assert float(y) == 1.0 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(x.numpy(), crops[1].transpose(2, 0, 1) / 255.0, atol=1e-6)
    assert len(FaceDataset(path, "val")) == 0  # offline copies never count outside train by default
    assert len(FaceDataset(path, "val", originals_only=False)) == 3
    seen = []
    flipped = FaceDataset(path, "train", augment=lambda img: seen.append(img.shape) or img[:, ::-1], input_size=8)
    x2, _ = flipped[0]
    assert seen == [(S, S, 3)] and x2.shape == (3, 8, 8)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)  # h5py opened in the worker
    xs, ys = zip(*loader)
    assert torch.cat(xs).shape == (3, 3, S, S) and torch.cat(ys).tolist() == [1.0, 1.0, 1.0]


def _drop_dataset(path: Path, name: str) -> None:
    with h5py.File(path, "a") as h5:
        del h5[name]


def _set_attr(path: Path, name: str, value: object) -> None:
    with h5py.File(path, "a") as h5:
        h5.attrs[name] = value


class _KilledAtWrite(__import__("io").FileIO):
    """The store file as HDF5 writes it, through h5py's file-object driver: counts writes once ``armed``, and at
    write ``kill_at`` the process dies by SIGKILL (the writes before it are in the file, as after a real kill)."""

    armed, writes, kill_at = False, 0, 0

    def write(self, data) -> int:  # noqa: ANN001
        import os
        import signal

        if _KilledAtWrite.armed:
            _KilledAtWrite.writes += 1
            if _KilledAtWrite.writes == _KilledAtWrite.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().write(data)


def _commit_one_video_then_die(path: Path, kill_at: int, report: int) -> None:
    """In a forked child: open the store, write and commit one more video with HDF5 killed at write ``kill_at``."""
    import os

    import trainer.store as store

    real_file = h5py.File

    def through_killer(name, mode="r", **kwargs):  # noqa: ANN001
        fileobj = _KilledAtWrite(name, "r+" if Path(name).exists() else "w+")
        return real_file(fileobj, mode, **kwargs)

    store.h5py.File = through_killer  # type: ignore[assignment]
    try:
        with FaceStoreWriter(path, **BUILD) as w:
            _KilledAtWrite.armed, _KilledAtWrite.kill_at = True, kill_at
            _write_video(w, "late.mp4", n=20, label=1, split="val", seed=9)
            _KilledAtWrite.armed = False
            os.write(report, str(_KilledAtWrite.writes).encode())
    finally:
        os._exit(0)


def test_a_kill_inside_an_hdf5_write_leaves_the_store_readable(tmp_path: Path):
    """SIGKILL at every write of a commit in turn: a kill inside HDF5's flush left B-trees pointing past the end
    of the file (unreadable, hours of crops lost). The published store must always read whole, and resume."""
    import os

    path = tmp_path / "faces.h5"
    with FaceStoreWriter(path, **BUILD) as w:
        for v in range(3):
            _write_video(w, f"v{v}.mp4", n=20, label=0, split="train", seed=v)
    published = path.read_bytes()

    def run_child(kill_at: int) -> str:
        path.write_bytes(published)
        for leftover in tmp_path.glob("faces.h5.*"):
            if not leftover.name.endswith(".lock"):
                leftover.unlink()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _commit_one_video_then_die(path, kill_at, write)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as r:
            return r.read()

    writes = int(run_child(0))  # no kill: how many writes one commit takes
    assert writes > 10
    for kill_at in range(1, writes + 1):
        run_child(kill_at)
        try:
            with FaceStore(path) as store:
                rows = len(store)
                assert rows == 60 and store.crops(np.arange(rows)).shape == (rows, S, S, 3)
                store.fingerprint()
            with FaceStoreWriter(path, **BUILD) as w:  # and a rerun resumes from it
                assert w.done_videos() == {"v0.mp4", "v1.mp4", "v2.mp4"} and w.rows == 60
        except (StoreError, OSError) as exc:
            pytest.fail(f"killed at write {kill_at} of {writes}: the store is broken ({exc})")
