"""The proxy's ledger: users, API tokens, nodes, stacks, locks and settlements, in SQLite.

A file keeps everything across restarts; ``":memory:"`` suits notebooks. Compute units follow
Atoma's stack rules (atoma-protocol.md section 4) with its leak mended: a lock's units stay locked
while its request is in flight and are always given back, by settlement (charge
``usage.total_tokens``, release the rest) or by release (charge nothing). The schema's CHECK keeps
``already_computed_units + locked_compute_units <= num_compute_units`` at all times.

A file ledger runs in WAL mode with ``synchronous=NORMAL`` by default: a committed transaction
is in the operating system's hands before the method returns, so killing the proxy's process
(``kill -9``) loses nothing committed, and the proxy answers a request only after its
settlement committed. An OS crash or power cut may lose the last commits (never the file's
consistency); ``synchronous="FULL"`` syncs every commit to disk instead, at a cost per request.
A request's ledger work is few transactions: the lock step is one (give back expired locks,
read the load, place, lock or buy), taking the lock in flight one, settling one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import fingerprint
from atoma_lab.errors import (
    InsufficientBalanceError,
    PermissionDeniedError,
    StackLockedError,
    StackNotFoundError,
    StackUnavailableError,
)

STACK_SIZE_TO_BUY = 1_000_000  # compute units per stack, Atoma's STACK_SIZE_TO_BUY
SQLITE_INT_MAX = 2**63 - 1  # SQLite integers are i64; the wire allows u64


def _sql_int(value: int) -> int:
    """A u64 from the wire as a query argument: ids and unit counts above i64 can match nothing
    that i64 columns hold, so clamp them (SQLite raises OverflowError on them otherwise)."""
    return min(value, SQLITE_INT_MAX)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    user_id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    balance_usdc INTEGER NOT NULL DEFAULT 0 CHECK (balance_usdc >= 0)
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(user_id)
);
CREATE TABLE IF NOT EXISTS nodes (
    node_small_id INTEGER PRIMARY KEY,
    address TEXT NOT NULL,
    sui_address TEXT NOT NULL,
    models TEXT NOT NULL,
    price_per_one_million_compute_units INTEGER NOT NULL,
    public_key BLOB,
    key_rotation_counter INTEGER NOT NULL DEFAULT 0,
    attestation_valid INTEGER NOT NULL DEFAULT 0,
    evidence BLOB,
    healthy INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS stacks (
    stack_small_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(user_id),
    owner_address TEXT NOT NULL,
    model TEXT NOT NULL,
    node_small_id INTEGER NOT NULL REFERENCES nodes(node_small_id),
    num_compute_units INTEGER NOT NULL,
    already_computed_units INTEGER NOT NULL DEFAULT 0,
    locked_compute_units INTEGER NOT NULL DEFAULT 0,
    price_per_one_million_compute_units INTEGER NOT NULL,
    is_locked INTEGER NOT NULL DEFAULT 0,
    is_claimed INTEGER NOT NULL DEFAULT 0,
    tx_digest TEXT,
    CHECK (locked_compute_units >= 0 AND already_computed_units >= 0),
    CHECK (already_computed_units + locked_compute_units <= num_compute_units)
);
CREATE TABLE IF NOT EXISTS locks (
    lock_id INTEGER PRIMARY KEY AUTOINCREMENT,
    stack_small_id INTEGER NOT NULL REFERENCES stacks(stack_small_id),
    user_id INTEGER NOT NULL,
    max_num_tokens INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'in_flight'))
);
CREATE INDEX IF NOT EXISTS locks_by_expiry ON locks(state, expires_at);
CREATE INDEX IF NOT EXISTS locks_by_stack ON locks(stack_small_id, state, expires_at);
CREATE INDEX IF NOT EXISTS stacks_by_user_model ON stacks(user_id, model);
CREATE INDEX IF NOT EXISTS stacks_in_flight ON stacks(node_small_id, locked_compute_units)
    WHERE locked_compute_units > 0;
CREATE TABLE IF NOT EXISTS settlements (
    settlement_id INTEGER PRIMARY KEY AUTOINCREMENT,
    stack_small_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    route TEXT NOT NULL,
    units_locked INTEGER NOT NULL,
    units_charged INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    at REAL NOT NULL
);
"""


LEDGER_TABLES = ("users", "nodes", "stacks", "locks", "settlements")
_FRAME_COLUMNS: dict[str, tuple[str, list[str]]] = {
    "users": ("user_id", ["user_id", "name", "balance_usdc", "stacks"]),
    "nodes": ("node_small_id", ["node_small_id", "address", "sui_address", "models",
                                "price_per_one_million_compute_units", "key_fingerprint",
                                "key_rotation_counter", "attestation_valid", "healthy"]),
    "stacks": ("stack_small_id", [
        "stack_small_id", "user_id", "owner_address", "model", "node_small_id",
        "num_compute_units", "already_computed_units", "locked_compute_units", "free_units",
        "price_per_one_million_compute_units", "is_locked", "is_claimed", "tx_digest"]),
    "locks": ("lock_id", ["lock_id", "stack_small_id", "user_id", "max_num_tokens",
                          "expires_at", "state"]),
    "settlements": ("settlement_id", ["settlement_id", "stack_small_id", "user_id", "route",
                                      "units_locked", "units_charged", "outcome", "at"]),
}


def _token_hash(token: str) -> str:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=32).hexdigest()


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_small_id: int
    address: str
    sui_address: str
    models: tuple[str, ...]
    price_per_one_million_compute_units: int
    public_key: bytes | None
    key_rotation_counter: int
    attestation_valid: bool
    evidence: bytes | None
    healthy: bool


@dataclass(frozen=True, slots=True)
class StackRecord:
    stack_small_id: int
    user_id: int
    owner_address: str
    model: str
    node_small_id: int
    num_compute_units: int
    already_computed_units: int
    locked_compute_units: int
    price_per_one_million_compute_units: int
    is_locked: bool
    is_claimed: bool
    tx_digest: str | None

    @property
    def free_units(self) -> int:
        return self.num_compute_units - self.already_computed_units - self.locked_compute_units


class Placement(Protocol):
    """Where a lock may go (:class:`atoma_lab.services.policy.Placement`)."""

    @property
    def search(self) -> tuple[int, ...]: ...

    @property
    def buy_on(self) -> NodeRecord: ...


SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")  # SQLite's PRAGMA synchronous levels


@dataclass(frozen=True, slots=True)
class LockRecord:
    lock_id: int
    stack_small_id: int
    user_id: int
    max_num_tokens: int
    expires_at: float
    state: str


class Ledger:
    """Thread-safe SQLite ledger. Every method is one transaction."""

    def __init__(self, path: str = ":memory:", *, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._mutex = threading.RLock()
        self._token_cache: dict[str, int] = {}  # token hash -> user id (tokens are never revoked)
        self._nodes_cache: list[NodeRecord] | None = None
        self._nodes_by_id: dict[int, NodeRecord] = {}
        self._conn.executescript(_SCHEMA)
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # A restart cannot know how in-flight requests ended; none was answered, so none is
        # charged: their units go back.
        self.release_in_flight()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    def proxy_signing_seed(self) -> bytes:
        """The proxy wallet's Ed25519 seed, created once and kept with the ledger, so that a
        restarted proxy still owns the stacks it bought (a simulator's wallet, not a real one)."""
        with self._tx() as c:
            row = c.execute("SELECT value FROM settings WHERE name='proxy_signing_seed'").fetchone()
            if row is not None:
                return bytes(row[0])
            seed = secrets.token_bytes(32)
            c.execute("INSERT INTO settings(name, value) VALUES ('proxy_signing_seed', ?)", (seed,))
            return seed

    # ---------------------------------------------------------------- users and tokens
    def add_user(self, name: str, *, balance_usdc: int = 0) -> int:
        with self._tx() as c:
            cur = c.execute("INSERT INTO users(name, balance_usdc) VALUES (?, ?)", (name, balance_usdc))
            return int(cur.lastrowid or 0)

    def user_id(self, name: str) -> int | None:
        with self._mutex:
            row = self._conn.execute("SELECT user_id FROM users WHERE name=?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def add_api_token(self, user_id: int, token: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO api_tokens(token_hash, user_id) VALUES (?, ?)",
                      (_token_hash(token), user_id))

    def user_for_token(self, token: str) -> int | None:
        digest = _token_hash(token)
        cached = self._token_cache.get(digest)
        if cached is not None:
            return cached
        with self._mutex:
            row = self._conn.execute("SELECT user_id FROM api_tokens WHERE token_hash=?",
                                     (digest,)).fetchone()
        if row is None:
            return None
        self._token_cache[digest] = int(row[0])
        return int(row[0])

    def balance(self, user_id: int) -> int:
        with self._mutex:
            row = self._conn.execute("SELECT balance_usdc FROM users WHERE user_id=?",
                                     (user_id,)).fetchone()
        return 0 if row is None else int(row[0])

    # ---------------------------------------------------------------- nodes
    def upsert_node(self, node_small_id: int, *, address: str, sui_address: str,
                    models: list[str] | tuple[str, ...], price_per_one_million_compute_units: int) -> None:
        with self._tx() as c:
            self._nodes_cache = None  # under the mutex: no reader sees the old rows again
            c.execute(
                """INSERT INTO nodes(node_small_id, address, sui_address, models,
                                     price_per_one_million_compute_units)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(node_small_id) DO UPDATE SET address=excluded.address,
                     sui_address=excluded.sui_address, models=excluded.models,
                     price_per_one_million_compute_units=excluded.price_per_one_million_compute_units""",
                (node_small_id, address, sui_address, json.dumps(list(models)),
                 price_per_one_million_compute_units),
            )

    def set_node_key(self, node_small_id: int, *, public_key: bytes, key_rotation_counter: int,
                     evidence: bytes | None, valid: bool) -> None:
        with self._tx() as c:
            self._nodes_cache = None  # under the mutex: no reader sees the old rows again
            c.execute(
                """UPDATE nodes SET public_key=?, key_rotation_counter=?, evidence=?,
                   attestation_valid=? WHERE node_small_id=?""",
                (public_key, key_rotation_counter, evidence, int(valid), node_small_id),
            )

    def set_node_health(self, node_small_id: int, healthy: bool) -> None:
        with self._tx() as c:
            self._nodes_cache = None  # under the mutex: no reader sees the old rows again
            c.execute("UPDATE nodes SET healthy=? WHERE node_small_id=?", (int(healthy), node_small_id))

    @staticmethod
    def _node(row: sqlite3.Row) -> NodeRecord:
        return NodeRecord(
            node_small_id=row["node_small_id"], address=row["address"],
            sui_address=row["sui_address"], models=tuple(json.loads(row["models"])),
            price_per_one_million_compute_units=row["price_per_one_million_compute_units"],
            public_key=row["public_key"], key_rotation_counter=row["key_rotation_counter"],
            attestation_valid=bool(row["attestation_valid"]), evidence=row["evidence"],
            healthy=bool(row["healthy"]),
        )

    def node(self, node_small_id: int) -> NodeRecord | None:
        with self._mutex:
            self._cached_nodes()
            return self._nodes_by_id.get(node_small_id)

    def _cached_nodes(self) -> list[NodeRecord]:
        if self._nodes_cache is None:
            rows = self._conn.execute("SELECT * FROM nodes ORDER BY node_small_id").fetchall()
            self._nodes_cache = [self._node(r) for r in rows]
            self._nodes_by_id = {n.node_small_id: n for n in self._nodes_cache}
        return self._nodes_cache

    def nodes(self) -> list[NodeRecord]:
        """All nodes (cached between node updates: every request routes through this)."""
        with self._mutex:
            return list(self._cached_nodes())

    def nodes_for_model(self, model: str, *, confidential: bool) -> list[NodeRecord]:
        """Healthy nodes serving ``model``, cheapest first; for confidential traffic only nodes
        whose current key has valid attestation."""
        return sorted(
            (n for n in self.nodes()
             if model in n.models and n.healthy
             and (not confidential or (n.attestation_valid and n.public_key is not None))),
            key=lambda n: (n.price_per_one_million_compute_units, n.node_small_id),
        )

    def models(self) -> list[str]:
        return sorted({m for n in self.nodes() for m in n.models})

    # ---------------------------------------------------------------- stacks
    @staticmethod
    def _stack(row: sqlite3.Row) -> StackRecord:
        return StackRecord(
            stack_small_id=row["stack_small_id"], user_id=row["user_id"],
            owner_address=row["owner_address"], model=row["model"],
            node_small_id=row["node_small_id"], num_compute_units=row["num_compute_units"],
            already_computed_units=row["already_computed_units"],
            locked_compute_units=row["locked_compute_units"],
            price_per_one_million_compute_units=row["price_per_one_million_compute_units"],
            is_locked=bool(row["is_locked"]), is_claimed=bool(row["is_claimed"]),
            tx_digest=row["tx_digest"],
        )

    def stack(self, stack_small_id: int) -> StackRecord:
        with self._mutex:
            row = self._conn.execute("SELECT * FROM stacks WHERE stack_small_id=?",
                                     (_sql_int(stack_small_id),)).fetchone()
        if row is None:
            raise StackNotFoundError(f"stack {stack_small_id} does not exist")
        return self._stack(row)

    def stacks(self, user_id: int | None = None) -> list[StackRecord]:
        with self._mutex:
            if user_id is None:
                rows = self._conn.execute("SELECT * FROM stacks ORDER BY stack_small_id").fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM stacks WHERE user_id=? ORDER BY stack_small_id",
                                          (user_id,)).fetchall()
        return [self._stack(r) for r in rows]

    def stack_owner(self, stack_small_id: int) -> str | None:
        """The owner address of a stack, as the chain would tell a node; None if unknown."""
        with self._mutex:
            row = self._conn.execute("SELECT owner_address FROM stacks WHERE stack_small_id=?",
                                     (_sql_int(stack_small_id),)).fetchone()
        return None if row is None else str(row[0])

    def set_stack_flags(self, stack_small_id: int, *, is_locked: bool | None = None,
                        is_claimed: bool | None = None) -> None:
        with self._tx() as c:
            if is_locked is not None:
                c.execute("UPDATE stacks SET is_locked=? WHERE stack_small_id=?",
                          (int(is_locked), stack_small_id))
            if is_claimed is not None:
                c.execute("UPDATE stacks SET is_claimed=? WHERE stack_small_id=?",
                          (int(is_claimed), stack_small_id))

    # ---------------------------------------------------------------- locks
    def _prune(self, c: sqlite3.Connection, now: float, stack_small_id: int | None = None) -> int:
        where = "state='open' AND expires_at <= ?"
        args: tuple[object, ...] = (now,)
        if stack_small_id is not None:
            where += " AND stack_small_id=?"
            args = (now, stack_small_id)
        rows = c.execute(f"SELECT lock_id, stack_small_id, max_num_tokens FROM locks WHERE {where}",
                         args).fetchall()
        for r in rows:
            c.execute("UPDATE stacks SET locked_compute_units = locked_compute_units - ? "
                      "WHERE stack_small_id=?", (r["max_num_tokens"], r["stack_small_id"]))
            c.execute("DELETE FROM locks WHERE lock_id=?", (r["lock_id"],))
        return len(rows)

    def prune_expired(self, now: float) -> int:
        """Give back the units of every open lock that expired; returns how many."""
        with self._tx() as c:
            return self._prune(c, now)

    def units_in_flight(self, now: float) -> dict[int, int]:
        """Compute units locked and not yet settled, per node (expired open locks given back
        first); nodes with none are left out."""
        with self._tx() as c:
            self._prune(c, now)
            return self._in_flight(c)

    @staticmethod
    def _in_flight(c: sqlite3.Connection) -> dict[int, int]:
        # The partial index holds only stacks with units locked: the few in use, not them all.
        rows = c.execute("SELECT node_small_id, SUM(locked_compute_units) FROM stacks "
                         "WHERE locked_compute_units > 0 GROUP BY node_small_id").fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    def lock_existing_stack(self, *, user_id: int, model: str, max_num_tokens: int,
                            timeout_s: float, now: float, eligible_nodes: list[int],
                            owner_address: str) -> tuple[StackRecord, LockRecord] | None:
        """Atoma's ``select_node_public_key_for_encryption``: the cheapest stack of this user for
        ``model`` on an eligible node with room, locked in the same transaction."""
        if not eligible_nodes:
            return None
        with self._tx() as c:
            self._prune(c, now)
            return self._lock_existing(c, user_id=user_id, model=model,
                                       max_num_tokens=max_num_tokens, expires_at=now + timeout_s,
                                       nodes=eligible_nodes, owner_address=owner_address)

    def _lock_existing(self, c: sqlite3.Connection, *, user_id: int, model: str,
                       max_num_tokens: int, expires_at: float, nodes: Sequence[int],
                       owner_address: str) -> tuple[StackRecord, LockRecord] | None:
        if not nodes:
            return None
        marks = ",".join("?" * len(nodes))
        row = c.execute(
            f"""SELECT stack_small_id FROM stacks WHERE user_id=? AND model=? AND is_locked=0
                AND is_claimed=0 AND owner_address=?
                AND num_compute_units - already_computed_units - locked_compute_units >= ?
                AND node_small_id IN ({marks})
                ORDER BY price_per_one_million_compute_units, stack_small_id LIMIT 1""",
            (user_id, model, owner_address, _sql_int(max_num_tokens), *nodes),
        ).fetchone()
        if row is None:
            return None
        return self._lock(c, row[0], user_id, max_num_tokens, expires_at)

    def place_and_lock(self, *, user_id: int, model: str, max_num_tokens: int, timeout_s: float,
                       now: float, owner_address: str,
                       place: Callable[[Mapping[int, int]], Placement], needs_load: bool,
                       size: int = STACK_SIZE_TO_BUY) -> tuple[StackRecord, LockRecord, bool]:
        """The proxy's lock step in one transaction: give back expired open locks, read the
        units in flight per node (when ``needs_load``), ask ``place`` where the request goes,
        lock the user's cheapest stack with room on the placement's nodes, or else buy a stack
        of ``size`` units on its ``buy_on`` node. Returns the stack, the lock and whether the
        stack was bought. :class:`InsufficientBalanceError` (402) or
        :class:`StackUnavailableError` when it cannot buy; the give-back stands either way."""
        refusal: Exception | None = None
        with self._tx() as c:
            self._prune(c, now)
            placement = place(self._in_flight(c) if needs_load else {})
            found = self._lock_existing(c, user_id=user_id, model=model,
                                        max_num_tokens=max_num_tokens, expires_at=now + timeout_s,
                                        nodes=placement.search, owner_address=owner_address)
            if found is not None:
                return (*found, False)
            try:
                bought = self._buy(c, user_id=user_id, model=model, node=placement.buy_on,
                                   owner_address=owner_address, max_num_tokens=max_num_tokens,
                                   expires_at=now + timeout_s, now=now, size=size)
            except (InsufficientBalanceError, StackUnavailableError) as exc:
                refusal = exc  # raised once the give-back is committed
            else:
                return (*bought, True)
        assert refusal is not None
        raise refusal

    def _lock(self, c: sqlite3.Connection, stack_small_id: int, user_id: int, max_num_tokens: int,
              expires_at: float) -> tuple[StackRecord, LockRecord]:
        c.execute("UPDATE stacks SET locked_compute_units = locked_compute_units + ? "
                  "WHERE stack_small_id=?", (max_num_tokens, stack_small_id))
        cur = c.execute("INSERT INTO locks(stack_small_id, user_id, max_num_tokens, expires_at) "
                        "VALUES (?, ?, ?, ?)", (stack_small_id, user_id, max_num_tokens, expires_at))
        lock = LockRecord(int(cur.lastrowid or 0), stack_small_id, user_id, max_num_tokens,
                          expires_at, "open")
        row = c.execute("SELECT * FROM stacks WHERE stack_small_id=?", (stack_small_id,)).fetchone()
        return self._stack(row), lock

    def buy_stack_and_lock(self, *, user_id: int, model: str, node: NodeRecord, owner_address: str,
                           max_num_tokens: int, timeout_s: float, now: float,
                           size: int = STACK_SIZE_TO_BUY) -> tuple[StackRecord, LockRecord]:
        """Buy a stack of ``size`` units on ``node`` for the user (paying its price) and lock
        ``max_num_tokens`` of it, all or nothing. :class:`InsufficientBalanceError` (402);
        :class:`StackUnavailableError` when ``max_num_tokens`` exceeds ``size``."""
        with self._tx() as c:
            return self._buy(c, user_id=user_id, model=model, node=node,
                             owner_address=owner_address, max_num_tokens=max_num_tokens,
                             expires_at=now + timeout_s, now=now, size=size)

    def _buy(self, c: sqlite3.Connection, *, user_id: int, model: str, node: NodeRecord,
             owner_address: str, max_num_tokens: int, expires_at: float, now: float,
             size: int) -> tuple[StackRecord, LockRecord]:
        if max_num_tokens > size:
            raise StackUnavailableError(
                f"max_num_tokens {max_num_tokens} exceeds the stack size {size}"
            )
        price = node.price_per_one_million_compute_units * size // 1_000_000
        bal = c.execute("SELECT balance_usdc FROM users WHERE user_id=?", (user_id,)).fetchone()
        if bal is None or bal[0] < price:
            raise InsufficientBalanceError("insufficient balance to buy a stack")
        c.execute("UPDATE users SET balance_usdc = balance_usdc - ? WHERE user_id=?", (price, user_id))
        cur = c.execute(
            """INSERT INTO stacks(user_id, owner_address, model, node_small_id, num_compute_units,
                                  price_per_one_million_compute_units)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (user_id, owner_address, model, node.node_small_id, size,
             node.price_per_one_million_compute_units),
        )
        stack_id = int(cur.lastrowid or 0)
        digest = hashlib.blake2b(f"stack:{stack_id}:{user_id}:{model}:{now}".encode(),
                                 digest_size=32).digest()
        c.execute("UPDATE stacks SET tx_digest=? WHERE stack_small_id=?",
                  (_base58(digest), stack_id))
        return self._lock(c, stack_id, user_id, max_num_tokens, expires_at)

    def consume_lock(self, *, stack_small_id: int, user_id: int, num_compute_units: int,
                     now: float) -> LockRecord:
        """Take the smallest unexpired open lock on the stack covering ``num_compute_units`` (of
        equal ones, the first to expire).

        Requests name their stack, not their lock, so one user's concurrent requests on a stack
        may take each other's locks; the smallest that covers keeps every request served when
        each locked for what it sends (the first to expire would let a small request take a
        larger lock and leave the larger request none). Atoma pools a stack's locked units,
        where the question does not arise.

        Its units stay locked until :meth:`settle` or :meth:`release`. Raises
        :class:`StackNotFoundError` (404), :class:`PermissionDeniedError` (403, another user's
        stack: Atoma does not check) or :class:`StackUnavailableError` (425).
        """
        sid, units = _sql_int(stack_small_id), _sql_int(num_compute_units)
        refusal: Exception
        with self._tx() as c:
            # Expired locks go back even when this request then fails: the refusal is raised
            # after the transaction commits.
            self._prune(c, now, sid)
            row = c.execute("SELECT user_id, is_locked, is_claimed FROM stacks WHERE stack_small_id=?",
                            (sid,)).fetchone()
            if row is None:
                refusal = StackNotFoundError(f"stack {stack_small_id} does not exist")
            elif row["user_id"] != user_id:
                refusal = PermissionDeniedError(f"stack {stack_small_id} belongs to another user")
            elif row["is_locked"] or row["is_claimed"]:
                refusal = StackLockedError(f"stack {stack_small_id} is claimed or settling")
            else:
                lock = c.execute(
                    """SELECT * FROM locks WHERE stack_small_id=? AND user_id=? AND state='open'
                       AND expires_at > ? AND max_num_tokens >= ?
                       ORDER BY max_num_tokens, expires_at LIMIT 1""",
                    (sid, user_id, now, units),
                ).fetchone()
                if lock is not None:
                    c.execute("UPDATE locks SET state='in_flight' WHERE lock_id=?",
                              (lock["lock_id"],))
                    return LockRecord(lock["lock_id"], stack_small_id, user_id,
                                      lock["max_num_tokens"], lock["expires_at"], "in_flight")
                refusal = StackUnavailableError(
                    f"no unexpired lock on stack {stack_small_id} covers {num_compute_units} "
                    "compute units; call /v1/nodes/lock first"
                )
        raise refusal

    def start_lock(self, lock_id: int) -> LockRecord:
        """Put one specific open lock in flight (the plain route locks and uses at once)."""
        with self._tx() as c:
            row = c.execute("SELECT * FROM locks WHERE lock_id=? AND state='open'", (lock_id,)).fetchone()
            if row is None:
                raise StackUnavailableError(f"lock {lock_id} is not open")
            c.execute("UPDATE locks SET state='in_flight' WHERE lock_id=?", (lock_id,))
            return LockRecord(row["lock_id"], row["stack_small_id"], row["user_id"],
                              row["max_num_tokens"], row["expires_at"], "in_flight")

    def _finish(self, lock_id: int, units: int, *, route: str, outcome: str, now: float) -> int:
        with self._tx() as c:
            lock = c.execute("SELECT * FROM locks WHERE lock_id=? AND state='in_flight'",
                             (lock_id,)).fetchone()
            if lock is None:
                raise ValueError(f"lock {lock_id} is not in flight (settled twice?)")
            charged = min(units, lock["max_num_tokens"])
            c.execute(
                """UPDATE stacks SET locked_compute_units = locked_compute_units - ?,
                   already_computed_units = already_computed_units + ? WHERE stack_small_id=?""",
                (lock["max_num_tokens"], charged, lock["stack_small_id"]),
            )
            c.execute("DELETE FROM locks WHERE lock_id=?", (lock_id,))
            c.execute(
                """INSERT INTO settlements(stack_small_id, user_id, route, units_locked,
                   units_charged, outcome, at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (lock["stack_small_id"], lock["user_id"], route, lock["max_num_tokens"], charged,
                 outcome, now),
            )
            return charged

    def settle(self, lock_id: int, units: int, *, route: str, now: float) -> int:
        """Charge ``units`` (at most the lock's size) and give back the rest of the lock."""
        if units < 0:
            raise ValueError("units must be non-negative")
        return self._finish(lock_id, units, route=route, outcome="charged", now=now)

    def release(self, lock_id: int, *, route: str, outcome: str, now: float) -> None:
        """Give back the whole lock, charging nothing (the request failed)."""
        self._finish(lock_id, 0, route=route, outcome=outcome, now=now)

    def release_in_flight(self) -> int:
        with self._tx() as c:
            rows = c.execute("SELECT * FROM locks WHERE state='in_flight'").fetchall()
            for r in rows:
                c.execute("UPDATE stacks SET locked_compute_units = locked_compute_units - ? "
                          "WHERE stack_small_id=?", (r["max_num_tokens"], r["stack_small_id"]))
                c.execute("DELETE FROM locks WHERE lock_id=?", (r["lock_id"],))
            return len(rows)

    def open_locks(self) -> list[LockRecord]:
        with self._mutex:
            rows = self._conn.execute("SELECT * FROM locks ORDER BY lock_id").fetchall()
        return [LockRecord(r["lock_id"], r["stack_small_id"], r["user_id"], r["max_num_tokens"],
                           r["expires_at"], r["state"]) for r in rows]

    def settlements(self) -> list[dict[str, object]]:
        with self._mutex:
            rows = self._conn.execute("SELECT * FROM settlements ORDER BY settlement_id").fetchall()
        return [dict(r) for r in rows]

    def users(self) -> list[dict[str, object]]:
        """Every user: ``user_id``, ``name``, ``balance_usdc`` and how many ``stacks`` it holds
        (API tokens are stored as hashes and never listed)."""
        with self._mutex:
            rows = self._conn.execute(
                "SELECT u.user_id, u.name, u.balance_usdc, COUNT(s.stack_small_id) AS stacks "
                "FROM users u LEFT JOIN stacks s ON s.user_id = u.user_id "
                "GROUP BY u.user_id ORDER BY u.user_id").fetchall()
        return [dict(r) for r in rows]

    def rows(self, table: str) -> list[dict[str, Any]]:
        """One of :data:`LEDGER_TABLES` as plain rows: ``users``, ``nodes`` (a key shown by
        its fingerprint, the evidence left out), ``stacks`` (with ``free_units``), ``locks``
        or ``settlements``."""
        if table == "users":
            return self.users()
        if table == "nodes":
            return [{"node_small_id": n.node_small_id, "address": n.address,
                     "sui_address": n.sui_address, "models": ", ".join(n.models),
                     "price_per_one_million_compute_units": n.price_per_one_million_compute_units,
                     "key_fingerprint": None if n.public_key is None else fingerprint(n.public_key),
                     "key_rotation_counter": n.key_rotation_counter,
                     "attestation_valid": n.attestation_valid, "healthy": n.healthy}
                    for n in self.nodes()]
        if table == "stacks":
            return [{**dataclasses.asdict(s), "free_units": s.free_units} for s in self.stacks()]
        if table == "locks":
            return [dataclasses.asdict(lock) for lock in self.open_locks()]
        if table == "settlements":
            return self.settlements()
        raise ValueError(f"table must be one of {LEDGER_TABLES}, not {table!r}")

    def to_frame(self, table: str = "stacks") -> Any:
        """One of :data:`LEDGER_TABLES` (:meth:`rows`) as a :class:`pandas.DataFrame`, indexed
        by its id."""
        if table not in _FRAME_COLUMNS:
            raise ValueError(f"table must be one of {LEDGER_TABLES}, not {table!r}")
        index, columns = _FRAME_COLUMNS[table]
        return to_frame(self.rows(table), columns, index=index)

    def snapshot(self) -> dict[str, object]:
        """Everything that accounting tests compare before and after a request."""
        return {
            "stacks": [s for s in self.stacks()],
            "locks": self.open_locks(),
            "balances": {u: self.balance(u) for u in self._user_ids()},
        }

    def _user_ids(self) -> list[int]:
        with self._mutex:
            return [int(r[0]) for r in self._conn.execute("SELECT user_id FROM users").fetchall()]


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base58(data: bytes) -> str:
    """Bitcoin-alphabet base58, the encoding of Sui transaction digests."""
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out
