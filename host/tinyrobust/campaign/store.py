"""The results store: one SQLite file per run directory, every measured sample written as it arrives."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from tinyrobust.errors import UserError

STORE_NAME = "results.sqlite"  # the store's file in a run's folder
# Device answers are committed together, at most this many or this long after the first one waiting: one commit
# per answer caps the store at about 14,000 answers per second (benchmarks/cluster.py), which the emulators of a
# few Ray nodes running a small model outpace. A host that dies loses at most these; a resumed run re-runs them.
COMMIT_ROWS = 256
COMMIT_SECONDS = 0.5

KEY = ("model", "precision", "mode", "params", "defense", "seed")  # what identifies a condition besides attack, eps

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- A condition is what one set of inputs was made under: the model and precision the device runs, the attack,
-- its eps, mode ("transfer" or "on-device") and parameters (JSON), the defense (JSON, "null" for none) and the
-- seed. queries counts the device queries an on-device attack made.
CREATE TABLE IF NOT EXISTS conditions (
    id INTEGER PRIMARY KEY, attack TEXT NOT NULL, eps REAL NOT NULL, model TEXT NOT NULL DEFAULT '',
    precision TEXT NOT NULL DEFAULT 'int8', mode TEXT NOT NULL DEFAULT 'transfer', params TEXT NOT NULL DEFAULT '{}',
    defense TEXT NOT NULL DEFAULT 'null', seed INTEGER NOT NULL DEFAULT 0, queries INTEGER,
    UNIQUE (model, precision, attack, eps, mode, params, defense, seed));
-- The inputs of a condition and the host references for them, stored together before the device runs.
CREATE TABLE IF NOT EXISTS samples (
    condition INTEGER NOT NULL REFERENCES conditions (id), sample INTEGER NOT NULL, label INTEGER NOT NULL,
    input BLOB NOT NULL, tflite BLOB NOT NULL, tflm BLOB NOT NULL, float BLOB,
    PRIMARY KEY (condition, sample));
CREATE TABLE IF NOT EXISTS device (
    condition INTEGER NOT NULL, sample INTEGER NOT NULL, output BLOB NOT NULL, ticks INTEGER NOT NULL,
    PRIMARY KEY (condition, sample), FOREIGN KEY (condition, sample) REFERENCES samples (condition, sample));
-- A split network's measured condition (split.evaluate), stored whole as it completes: run names the split run in
-- the store ("split-evaluate", or a campaign's "split-<entropy model>"), condition is its kind, name, eps and
-- severity, and measured what split.evaluate.measure returned for it (both JSON).
CREATE TABLE IF NOT EXISTS split_conditions (
    run TEXT NOT NULL, beta REAL NOT NULL, condition TEXT NOT NULL, measured TEXT NOT NULL,
    PRIMARY KEY (run, beta, condition));
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
        self.unsaved: list[tuple] = []  # device answers not committed yet
        self.first_unsaved = 0.0
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(conditions)")}
        if "precision" not in columns:
            self.db.close()
            raise UserError(f"{path} was written by an older tinyrobust; start a new run in another directory")

    def close(self) -> None:
        self.commit()
        self.db.close()

    def get_meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def condition(self, attack: str, eps: float, **key) -> int:
        """The id of the condition with this attack, eps and key (model, precision, mode, params, defense, seed;
        params and defense as JSON text), created when missing. Key fields left out match any value, so
        condition("pgd", 0.2) finds the one PGD condition at eps 0.2 of a single-model run."""
        unknown = set(key) - set(KEY)
        if unknown:
            raise ValueError(f"conditions have no field {', '.join(sorted(unknown))}")
        where = " AND ".join(f"{name} = ?" for name in ("attack", "eps", *key))
        values = (attack, eps, *key.values())
        rows = self.db.execute(f"SELECT id FROM conditions WHERE {where}", values).fetchall()
        if len(rows) == 1:
            return rows[0][0]
        if rows:
            raise ValueError(f"several conditions match {attack} eps {eps} {key}; give more of the key")
        with self.db:
            names = ", ".join(("attack", "eps", *key))
            cursor = self.db.execute(
                f"INSERT INTO conditions ({names}) VALUES ({', '.join('?' * len(values))})", values
            )
        return cursor.lastrowid

    def set_queries(self, condition: int, queries: int) -> None:
        with self.db:
            self.db.execute("UPDATE conditions SET queries = ? WHERE id = ?", (queries, condition))

    def queries(self, condition: int) -> int | None:
        return self.db.execute("SELECT queries FROM conditions WHERE id = ?", (condition,)).fetchone()[0]

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
        self.commit()
        return self.db.execute(
            "SELECT s.sample, s.input FROM samples s LEFT JOIN device d USING (condition, sample) "
            "WHERE s.condition = ? AND d.sample IS NULL ORDER BY s.sample",
            (condition,),
        ).fetchall()

    def add_device_output(self, condition: int, sample: int, output: bytes, ticks: int) -> None:
        """Store a device answer; it is committed with the next COMMIT_ROWS, or after COMMIT_SECONDS."""
        if not self.unsaved:
            self.first_unsaved = time.monotonic()
        self.unsaved.append((condition, sample, output, ticks))
        if len(self.unsaved) >= COMMIT_ROWS or time.monotonic() - self.first_unsaved >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        """Commit the device answers stored so far."""
        if self.unsaved:
            with self.db:
                self.db.executemany("INSERT INTO device VALUES (?, ?, ?, ?)", self.unsaved)
            self.unsaved = []

    def outputs(self, condition: int, dtype, input_dtype=None) -> dict[str, np.ndarray]:
        """Every engine's outputs for a condition, one row per sample, with the labels and inputs: outputs of the
        model's output type (dtype), inputs of its input type (input_dtype, the same when omitted)."""
        self.commit()
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

    def split_measured(self, run: str, beta: float) -> dict[str, dict]:
        """What a split run measured at beta: each stored condition's measurement."""
        rows = self.db.execute("SELECT condition, measured FROM split_conditions WHERE run = ? AND beta = ?",
                               (run, beta)).fetchall()  # fmt: skip
        return {condition: json.loads(measured) for condition, measured in rows}

    def add_split_measured(self, run: str, beta: float, condition: str, measured: dict) -> None:
        with self.db:
            self.db.execute("INSERT INTO split_conditions VALUES (?, ?, ?, ?)",
                            (run, beta, condition, json.dumps(measured)))  # fmt: skip

    def ticks(self, conditions: list[int] | None = None) -> list[int]:
        """The device's counts, of the given conditions or of all."""
        self.commit()
        rows = self.db.execute("SELECT condition, ticks FROM device ORDER BY condition, sample").fetchall()
        return [t for c, t in rows if conditions is None or c in conditions]
