"""The results store: one SQLite file per run directory, every measured sample written as it arrives."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conditions (
    id INTEGER PRIMARY KEY, attack TEXT NOT NULL, eps REAL NOT NULL, UNIQUE (attack, eps));
-- The inputs of a condition and the host references for them, stored together before the device runs.
CREATE TABLE IF NOT EXISTS samples (
    condition INTEGER NOT NULL REFERENCES conditions (id), sample INTEGER NOT NULL, label INTEGER NOT NULL,
    input BLOB NOT NULL, tflite BLOB NOT NULL, tflm BLOB NOT NULL, float BLOB,
    PRIMARY KEY (condition, sample));
CREATE TABLE IF NOT EXISTS device (
    condition INTEGER NOT NULL, sample INTEGER NOT NULL, output BLOB NOT NULL, ticks INTEGER NOT NULL,
    PRIMARY KEY (condition, sample), FOREIGN KEY (condition, sample) REFERENCES samples (condition, sample));
"""


class Store:
    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A committed sample survives the host process being killed; FULL would also survive an OS crash, at an
        # fsync per sample that costs more than the host's whole share of a campaign.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get_meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def condition(self, attack: str, eps: float) -> int:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO conditions (attack, eps) VALUES (?, ?)", (attack, eps))
        return self.db.execute("SELECT id FROM conditions WHERE attack = ? AND eps = ?", (attack, eps)).fetchone()[0]

    def has_samples(self, condition: int) -> bool:
        return self.db.execute("SELECT 1 FROM samples WHERE condition = ? LIMIT 1", (condition,)).fetchone() is not None

    def add_samples(self, condition: int, labels, inputs, tflite, tflm, floats) -> None:
        rows = [
            (condition, i, int(labels[i]), inputs[i].tobytes(), tflite[i].tobytes(), tflm[i].tobytes(),
             None if floats is None else floats[i].astype(np.float32).tobytes())
            for i in range(len(inputs))
        ]  # fmt: skip
        with self.db:
            self.db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def pending(self, condition: int) -> list[tuple[int, bytes]]:
        """(sample, input) of the samples the device has not answered yet, in order."""
        return self.db.execute(
            "SELECT s.sample, s.input FROM samples s LEFT JOIN device d USING (condition, sample) "
            "WHERE s.condition = ? AND d.sample IS NULL ORDER BY s.sample",
            (condition,),
        ).fetchall()

    def add_device_output(self, condition: int, sample: int, output: bytes, ticks: int) -> None:
        with self.db:
            self.db.execute("INSERT INTO device VALUES (?, ?, ?, ?)", (condition, sample, output, ticks))

    def outputs(self, condition: int, dtype, input_dtype=None) -> dict[str, np.ndarray]:
        """Every engine's outputs for a condition, one row per sample, with the labels and inputs: outputs of the
        model's output type (dtype), inputs of its input type (input_dtype, the same when omitted)."""
        rows = self.db.execute(
            "SELECT s.label, s.input, s.tflite, s.tflm, s.float, d.output FROM samples s "
            "JOIN device d USING (condition, sample) WHERE s.condition = ? ORDER BY s.sample",
            (condition,),
        ).fetchall()
        result = {
            "labels": np.array([r[0] for r in rows], dtype=np.int64),
            "input": np.stack([np.frombuffer(r[1], input_dtype or dtype) for r in rows]),
            "tflite": np.stack([np.frombuffer(r[2], dtype) for r in rows]),
            "tflm": np.stack([np.frombuffer(r[3], dtype) for r in rows]),
            "device": np.stack([np.frombuffer(r[5], dtype) for r in rows]),
        }
        if rows[0][4] is not None:
            result["float"] = np.stack([np.frombuffer(r[4], np.float32) for r in rows])
        return result

    def ticks(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT ticks FROM device ORDER BY condition, sample")]
