"""W&B logging without a W&B server: offline runs under the run folder, one per stage, grouped per train-all."""

from __future__ import annotations

import time
from pathlib import Path

from antimask.config import load_config
from antimask.pipeline import train_stage
from antimask.tracking import loggers
from test_scaleout import DEFAULT, small_photos, small_store, small_words  # noqa: F401  (session fixtures)


def read_wandb_records(path: Path) -> list:
    """The records of a .wandb file: a LevelDB-style log (7-byte header, 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    block, pos, records, parts = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        parts += chunk
        if kind in (1, 4):  # full or last
            records.append(pb.Record.FromString(parts))
            parts = b""
    return records


def _run_record(folder: Path, wait: float = 60.0):
    """The run record of an offline run; wandb's service may still be flushing the file after finish()."""
    deadline = time.time() + wait
    while True:
        try:
            runs = {r.run.run_id: r.run for f in folder.glob("run-*.wandb") for r in read_wandb_records(f)
                    if r.WhichOneof("record_type") == "run"}
        except Exception:  # a chunk still being written
            runs = {}
        if runs or time.time() > deadline:
            (record,) = runs.values()
            return record
        time.sleep(0.5)


def test_offline_stages_of_one_run_are_one_group_without_network(small_photos, small_store, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a closed port: any network call would fail
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "exp7"
    cfg = load_config(DEFAULT, small_words(small_photos, small_store, run, "wandb.enabled=true"))
    start = time.time()
    for stage in ("face_decoder", "mask_decoder"):  # what train-all does, stage after stage in one process
        train_stage(cfg, stage)
    import wandb

    wandb.finish()
    assert time.time() - start < 240, "offline W&B must not wait on a network"
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2, f"one offline run per stage, under the run folder: {folders}"
    seen = {}
    for folder in folders:
        record = _run_record(folder)
        seen[record.job_type] = record
        assert record.run_group == "exp7" and record.project == "antimask"
    assert set(seen) == {"face_decoder", "mask_decoder"}
    assert seen["mask_decoder"].display_name == "exp7/mask_decoder"
    assert seen["face_decoder"].run_id != seen["mask_decoder"].run_id


def test_wandb_is_offline_without_credentials(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with an api.wandb.ai entry
    cfg = load_config(DEFAULT, [f"run.dir={tmp_path / 'r'}", "wandb.enabled=true"])
    (logger,) = [lg for lg in loggers(cfg, "encoder") if isinstance(lg, WandbLogger)]
    init = logger._wandb_init
    assert init["mode"] == "offline" and init["dir"] == str(tmp_path / "r")
    assert (init["group"], init["job_type"], init["name"]) == ("r", "encoder", "r/encoder")
